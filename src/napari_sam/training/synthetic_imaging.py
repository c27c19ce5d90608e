"""Imaging model for synthetic fluorescence microscopy.

Turns a noiseless "specimen" signal (float, relative units: background 0, a
typical object about 1) into a camera image: optical blur (Gaussian PSF),
uneven illumination, background, photon (Poisson) noise, Gaussian read noise
and quantisation to ``uint8`` or ``uint16``.

All arrays are in napari order: (row, col) in 2D, (z, row, col) in 3D.
These are internals of :mod:`napari_sam.training.synthetic`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "DN_PER_UNIT",
    "DN_OFFSET",
    "smooth_noise",
    "illumination_field",
    "blur",
    "acquire",
]

#: Digital numbers a unit-brightness object maps to, per output dtype. Chosen so
#: that typical objects sit well inside the range and only rare, very bright
#: overlaps saturate.
DN_PER_UNIT = {"uint8": 90.0, "uint16": 9000.0}
#: Camera offset (black level) per output dtype, as real sCMOS/CCD cameras add.
DN_OFFSET = {"uint8": 8.0, "uint16": 1000.0}


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    sigma: float | tuple[float, ...],
) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit standard deviation.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        Output shape, (Y, X) or (Z, Y, X).
    sigma : float or tuple of float
        Correlation length in pixels, one value or one per axis.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``.

    Notes
    -----
    Large correlation lengths are generated on a coarser grid and upsampled
    linearly, which keeps the cost independent of ``sigma``.
    """
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (len(shape),))
    factor = np.maximum(1, np.floor(sig / 2.0)).astype(int)
    small_shape = tuple(int(np.ceil(s / f)) + 1 for s, f in zip(shape, factor))
    field = rng.standard_normal(small_shape, dtype=np.float32)
    field = ndimage.gaussian_filter(field, sigma=tuple(sig / factor), mode="wrap")
    if np.any(factor > 1):
        field = ndimage.zoom(field, tuple(factor), order=1, grid_mode=False)
    field = field[tuple(slice(0, s) for s in shape)]
    std = float(field.std())
    field -= field.mean()
    if std > 0:
        field /= std
    return np.ascontiguousarray(field, dtype=np.float32)


def illumination_field(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    strength: float,
) -> np.ndarray:
    """Smooth multiplicative illumination: vignetting plus a linear gradient.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    shape : tuple of int
        (Y, X) or (Z, Y, X). In 3D the lateral field is shared by all planes
        and deeper planes are additionally attenuated (up to ``strength / 2``).
    strength : float
        0 gives a flat field; otherwise the darkest point is about
        ``1 - strength`` times the brightest (which is 1).

    Returns
    -------
    numpy.ndarray
        float32 array broadcastable to ``shape``, values in (0, 1].
    """
    ny, nx = shape[-2:]
    rows = (np.arange(ny, dtype=np.float32) / max(ny - 1, 1))[:, None]
    cols = (np.arange(nx, dtype=np.float32) / max(nx - 1, 1))[None, :]
    # Vignetting around an off-centre optical axis.
    cy, cx = rng.uniform(0.25, 0.75, size=2)
    vignette = (rows - cy) ** 2 + (cols - cx) ** 2
    vignette /= max(float(vignette.max()), 1e-6)
    # Linear gradient in a random direction (e.g. a tilted light path).
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.cos(angle) * rows + np.sin(angle) * cols
    ramp = ramp - ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    weight = rng.uniform(0.3, 0.8)
    darkening = weight * vignette + (1.0 - weight) * ramp
    field = (1.0 - strength * darkening).astype(np.float32)
    if len(shape) == 3:
        nz = shape[0]
        depth = np.arange(nz, dtype=np.float32) / max(nz - 1, 1)
        attenuation = rng.uniform(0.0, 0.5 * strength)
        field = field[None, :, :] * (1.0 - attenuation * depth)[:, None, None]
    return np.maximum(field, 0.02).astype(np.float32)


def blur(signal: np.ndarray, sigma: tuple[float, ...]) -> np.ndarray:
    """Convolve with a Gaussian PSF (``sigma`` in pixels, one per axis)."""
    if all(s <= 0 for s in sigma):
        return signal
    return ndimage.gaussian_filter(signal, sigma=sigma, mode="nearest", truncate=3.0)


def acquire(
    expected: np.ndarray,
    rng: np.random.Generator,
    photon_scale: float,
    read_noise: float,
    dtype: str,
) -> np.ndarray:
    """Simulate the camera: photon shot noise, read noise, offset, quantisation.

    Parameters
    ----------
    expected : numpy.ndarray
        Expected intensity in relative units (>= 0), any shape.
    rng : numpy.random.Generator
        Source of randomness.
    photon_scale : float
        Mean photons detected for intensity 1; lower means noisier.
    read_noise : float
        Standard deviation of Gaussian read noise, in photo-electrons.
    dtype : {"uint8", "uint16"}
        Output dtype.

    Returns
    -------
    numpy.ndarray
        Image of ``expected.shape`` and ``dtype``. Intensity 1 maps to about
        ``DN_PER_UNIT[dtype]`` above a camera offset of ``DN_OFFSET[dtype]``
        (for uint16 raised to 4 read-noise standard deviations if that is
        larger, so dark pixels are not clipped at 0; 8-bit images clip, as
        8-bit exports do).
    """
    lam = np.clip(expected, 0.0, None).astype(np.float64) * photon_scale
    counts = rng.poisson(lam).astype(np.float32)
    if read_noise > 0:
        counts += rng.standard_normal(counts.shape, dtype=np.float32) * np.float32(read_noise)
    gain = DN_PER_UNIT[dtype] / photon_scale
    offset = DN_OFFSET[dtype]
    if dtype == "uint16":  # room below the offset for the read noise, as cameras have
        offset = max(offset, 4.0 * read_noise * gain)
    dn = counts * np.float32(gain) + np.float32(offset)
    info = np.iinfo(dtype)
    np.rint(dn, out=dn)
    np.clip(dn, info.min, info.max, out=dn)
    return dn.astype(dtype)
