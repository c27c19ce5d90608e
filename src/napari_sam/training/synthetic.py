"""Synthetic fluorescence microscopy with exact instance ground truth.

A seeded, reproducible generator of 2D images and 3D stacks that look like
widefield/confocal fluorescence data, together with their instance labels.
It trains and evaluates the ``tiny-synth`` model and feeds tests and demos
without any download.

Two kinds of specimen:

``"nuclei"``
    Bright, textured ellipses (ellipsoids in 3D) of varied size, eccentricity
    and orientation, often touching and slightly overlapping, like a DAPI or
    Hoechst stain.
``"cells"``
    Touching cells with a bright membrane and a dim interior, like a membrane
    stain of a tissue or a confluent culture (a tessellation with signal on
    the cell borders).

Images are in napari order, (Y, X) or (Z, Y, X); labels are uint32 of the same
shape with 0 = background and objects numbered 1..N.

Examples
--------
>>> from dataclasses import replace
>>> from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d, make_stack_3d
>>> image, labels = make_image_2d(TRAIN_PRESET, seed=0)
>>> stack, stack_labels = make_stack_3d(replace(TRAIN_PRESET, shape=(32, 128, 128)), seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from skimage.segmentation import find_boundaries

from napari_sam.training.synthetic_imaging import acquire, blur, illumination_field, smooth_noise
from napari_sam.training.synthetic_params import (
    HELDOUT_PRESET,
    TRAIN_PRESET,
    Range,
    SynthParams,
    is_int,
    pair,
)
from napari_sam.training.synthetic_shapes import Patch, place_ellipsoids, tessellate

__all__ = [
    "SynthParams",
    "TRAIN_PRESET",
    "HELDOUT_PRESET",
    "make_image_2d",
    "make_stack_3d",
    "make_sample",
    "make_dataset",
    "iter_dataset",
]


def _rng(seed: int) -> np.random.Generator:
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def _uniform(rng: np.random.Generator, value: Range | float) -> float:
    bounds = pair(value)
    return float(rng.uniform(*bounds)) if bounds[1] > bounds[0] else bounds[0]


def _kind_default(value: float | None, kind: str, nuclei: float, cells: float) -> float:
    if value is not None:
        return value
    return nuclei if kind == "nuclei" else cells


def _n_objects(rng: np.random.Generator, params: SynthParams, spacing: np.ndarray) -> int:
    if params.n_objects is not None:
        lo, hi = pair(params.n_objects)
        return int(rng.integers(int(lo), int(hi) + 1))
    lo, hi = pair(params.radius)
    ndim = len(params.shape)
    if ndim == 2:
        mean_size = np.pi * (lo * lo + lo * hi + hi * hi) / 3.0
    else:
        mean_size = 4.0 / 3.0 * np.pi * (lo + hi) * (lo * lo + hi * hi) / 4.0 / float(np.prod(spacing))
    if params.kind == "cells":
        mean_size *= 1.2**ndim  # cells also fill the gaps between seeds
    expected = _kind_default(params.density, params.kind, 0.3, 0.6) * float(np.prod(params.shape)) / mean_size
    return int(rng.poisson(expected))


def _render_nuclei(
    rng: np.random.Generator, params: SynthParams, shape: tuple[int, ...], patches: list[Patch], radius: float
) -> np.ndarray:
    """Noiseless nuclear signal: domed, textured ellipses, additive where they overlap."""
    signal = np.zeros(shape, dtype=np.float32)
    brightness = np.exp(rng.normal(0.0, params.brightness_spread, size=len(patches)))
    for patch, b in zip(patches, brightness):
        dome = np.float32(b) * (np.float32(1.0) - np.float32(0.3) * patch.rho[patch.mask] ** 2)
        signal[patch.slices][patch.mask] += dome
    strength = _uniform(rng, params.texture)
    if patches and strength > 0:
        fine = smooth_noise(rng, shape, 1.0)
        coarse = smooth_noise(rng, shape, max(radius / 3.0, 1.5))
        texture = np.float32(strength) * (np.float32(0.6) * fine + np.float32(0.8) * coarse)
        signal *= np.clip(1.0 + texture, 0.1, None)
    return signal


def _render_cells(
    rng: np.random.Generator, params: SynthParams, labels: np.ndarray, radius: float
) -> np.ndarray:
    """Noiseless membrane signal: bright, punctate cell borders and dim interiors."""
    n = int(labels.max())
    lut = np.zeros(n + 1, dtype=np.float32)
    lut[1:] = np.exp(rng.normal(0.0, params.brightness_spread, size=n))
    per_cell = lut[labels]
    if n == 0:
        return per_cell
    membrane = find_boundaries(labels, connectivity=1, mode="inner")
    strength = _uniform(rng, params.texture)
    puncta = np.clip(1.0 + np.float32(1.5 * strength) * smooth_noise(rng, labels.shape, 1.0), 0.05, None)
    coarse = smooth_noise(rng, labels.shape, max(radius / 3, 1.5))
    haze = np.clip(1.0 + np.float32(strength) * coarse, 0.1, None)
    weight = np.where(membrane, puncta, np.float32(params.cell_interior) * haze)
    return (per_cell * weight).astype(np.float32)


def _generate(params: SynthParams, seed: int, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    shape = params.shape
    if len(shape) != ndim:
        want = "(Y, X)" if ndim == 2 else "(Z, Y, X)"
        raise ValueError(
            f"params.shape {shape} has {len(shape)} axes but this function makes {want} data; "
            f"use dataclasses.replace(params, shape=...) with a {ndim}-axis shape"
        )
    rng = _rng(seed)
    spacing = np.ones(ndim)
    if ndim == 3:
        spacing[0] = params.z_anisotropy
    n = _n_objects(rng, params, spacing)
    radius, eccentricity = pair(params.radius), pair(params.eccentricity)
    radius_mid = 0.5 * (radius[0] + radius[1])
    cluster = _kind_default(params.cluster, params.kind, 0.4, 0.95)
    if params.kind == "nuclei":
        labels, patches = place_ellipsoids(
            rng, shape, spacing, n, radius, eccentricity, params.max_overlap, cluster
        )
        signal = _render_nuclei(rng, params, shape, patches, radius_mid)
    else:
        wobble_sigma = tuple(max(radius_mid / 2, 1.0) / spacing)
        wobble = np.float32(0.25 * radius_mid) * smooth_noise(rng, shape, wobble_sigma)
        labels = tessellate(rng, shape, spacing, n, radius, eccentricity, cluster, wobble)
        signal = _render_cells(rng, params, labels, radius_mid)
    sigma = _uniform(rng, params.blur_sigma)
    sigmas = (sigma,) * ndim
    if ndim == 3:
        sigmas = (sigma * params.axial_blur / params.z_anisotropy, sigma, sigma)
    signal = blur(signal, sigmas)
    background = _uniform(rng, params.background)
    illum = illumination_field(rng, shape, _uniform(rng, params.illumination))
    # Faint, very smooth autofluorescence so the background is not perfectly flat.
    haze = np.float32(1.0) + np.float32(0.2) * smooth_noise(
        rng, shape, tuple(8.0 * max(radius_mid, 1.0) / spacing)
    )
    expected = (signal + np.float32(background) * np.clip(haze, 0.3, None)) * illum
    photon_lo, photon_hi = pair(params.photon_scale)
    log_lo, log_hi = np.log(photon_lo), np.log(photon_hi)
    photons = float(np.exp(rng.uniform(log_lo, log_hi))) if log_hi > log_lo else photon_lo
    image = acquire(expected, rng, photons, _uniform(rng, params.read_noise), params.dtype)
    return image, labels.astype(np.uint32, copy=False)


def make_image_2d(params: SynthParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic 2D fluorescence image and its instance labels.

    Parameters
    ----------
    params : SynthParams
        Generator settings; ``params.shape`` must be (Y, X).
    seed : int
        Non-negative seed. The same ``(params, seed)`` always gives identical
        arrays; different seeds give different images.

    Returns
    -------
    image : numpy.ndarray
        (Y, X) of ``params.dtype``.
    labels : numpy.ndarray
        (Y, X) uint32; 0 = background, objects 1..N (consecutive). Every
        object is one 4-connected piece of at least 20 pixels, showing at
        least half of its area (in overlaps the later object owns the pixels).

    Raises
    ------
    ValueError
        If ``params.shape`` is not 2D or ``seed`` is negative.
    TypeError
        If ``seed`` is not an int.
    """
    return _generate(params, seed, ndim=2)


def make_stack_3d(params: SynthParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic 3D fluorescence stack and its instance labels.

    Objects are randomly oriented ellipsoids (nuclei) or a 3D tessellation
    (cells), round in physical space; z is sampled ``params.z_anisotropy``
    times more coarsely than y and x, and the PSF is elongated along z.

    Parameters
    ----------
    params : SynthParams
        Generator settings; ``params.shape`` must be (Z, Y, X).
    seed : int
        Non-negative seed; same ``(params, seed)`` gives identical arrays.

    Returns
    -------
    image : numpy.ndarray
        (Z, Y, X) of ``params.dtype``.
    labels : numpy.ndarray
        (Z, Y, X) uint32; 0 = background, objects 1..N (consecutive). Each
        object keeps one id through z, is one 6-connected piece of at least 20
        voxels and so occupies a contiguous range of z planes.

    Raises
    ------
    ValueError
        If ``params.shape`` is not 3D or ``seed`` is negative.
    TypeError
        If ``seed`` is not an int.
    """
    return _generate(params, seed, ndim=3)


def make_sample(params: SynthParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`make_image_2d` or :func:`make_stack_3d`, chosen by ``len(params.shape)``."""
    return _generate(params, seed, ndim=len(params.shape))


def _sample_seed(seed: int, index: int) -> int:
    """Independent, reproducible per-sample seed derived from (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def iter_dataset(
    params: SynthParams, seed: int, n: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image, labels)`` pairs, endlessly when ``n`` is None.

    Sample ``i`` is the same as ``make_dataset(n, params, seed)[i]``, so a
    training loop can stream what an evaluation script materialises.

    Parameters
    ----------
    params : SynthParams
        Generator settings; 2D or 3D by ``len(params.shape)``.
    seed : int
        Non-negative dataset seed.
    n : int or None
        Number of samples, or None for an infinite stream.
    """
    _rng(seed)  # validate eagerly
    if n is not None and (not is_int(n) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    return _iterate(params, seed, n)


def _iterate(params: SynthParams, seed: int, n: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    index = 0
    while n is None or index < n:
        yield make_sample(params, _sample_seed(seed, index))
        index += 1


def make_dataset(
    n: int,
    params: SynthParams,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make ``n`` independent ``(image, labels)`` pairs.

    Parameters
    ----------
    n : int
        Number of samples (>= 0).
    params : SynthParams
        Generator settings; 2D or 3D by ``len(params.shape)``.
    seed : int
        Non-negative dataset seed; sample ``i`` uses a seed derived from
        ``(seed, i)``, so datasets with different ``n`` share their first samples.
    progress : callable, optional
        Called as ``progress(done, n)`` after each sample.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``n`` pairs as returned by :func:`make_image_2d` / :func:`make_stack_3d`.
    """
    if not is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    out = []
    for i, sample in enumerate(iter_dataset(params, seed, n), start=1):
        out.append(sample)
        if progress is not None:
            progress(i, n)
    return out
