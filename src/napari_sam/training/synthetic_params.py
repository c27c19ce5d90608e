"""Parameters and presets of the synthetic microscopy generator.

See :mod:`napari_sam.training.synthetic` for the generator itself; the names
here are re-exported there.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["SynthParams", "TRAIN_PRESET", "HELDOUT_PRESET", "Range", "is_int", "pair"]

Range = tuple[float, float]

_RANGE_FIELDS = (
    "radius",
    "eccentricity",
    "texture",
    "blur_sigma",
    "photon_scale",
    "read_noise",
    "background",
    "illumination",
)


@dataclass(frozen=True)
class SynthParams:
    """Parameters of the synthetic microscopy generator.

    Every ``(low, high)`` range is sampled uniformly once per image (the photon
    scale log-uniformly), so one ``SynthParams`` describes a distribution of
    images. A single number may be given for any range and means ``(x, x)``.

    Attributes
    ----------
    shape : tuple of int
        Output shape: (Y, X) for :func:`make_image_2d`, (Z, Y, X) for
        :func:`make_stack_3d`.
    kind : {"nuclei", "cells"}
        Bright textured blobs, or touching cells with bright membranes.
    n_objects : (int, int) or int or None
        Number of objects requested (sampled in the inclusive range). When
        None, ``density`` sets it. Fewer may appear when the field is full.
    density : float or None
        Fraction of the field the objects should cover (used when
        ``n_objects`` is None), in (0, 1]. None: 0.3 for nuclei, 0.6 for cells.
    radius : (float, float)
        Equivalent radius of an object (the radius of a disc/ball of the same
        area/volume), in lateral pixels.
    eccentricity : (float, float)
        Eccentricity of the ellipses, 0 = round, in [0, 0.95].
    max_overlap : float
        Largest fraction of a new nucleus that may lie over earlier ones, in
        [0, 0.5]. In overlaps the later object owns the pixels in the labels.
    cluster : float or None
        Probability that a new object is placed touching an existing one,
        in [0, 1]; higher gives clumps and sheets. None: 0.4 for nuclei,
        0.95 for cells (confluent sheets).
    brightness_spread : float
        Standard deviation of the log of the per-object brightness.
    texture : (float, float)
        Strength of the smooth intensity texture inside objects (chromatin,
        membrane puncta), as a fraction of the object's brightness.
    blur_sigma : (float, float)
        Lateral Gaussian PSF sigma in pixels.
    photon_scale : (float, float)
        Photons detected for a unit-brightness object (Poisson noise); lower
        is noisier.
    read_noise : (float, float)
        Gaussian camera read noise, standard deviation in photo-electrons.
    background : (float, float)
        Background level relative to a unit-brightness object.
    illumination : (float, float)
        Uneven illumination strength: the darkest corner receives about
        ``1 - strength`` of the brightest point's light.
    dtype : {"uint8", "uint16"}
        Image dtype. A unit-brightness object maps to about 90 (uint8) or
        9000 (uint16) above the camera offset.
    z_anisotropy : float
        3D only: z spacing divided by the lateral pixel size (>= 1 for typical
        stacks). Objects are round in physical space.
    axial_blur : float
        3D only: axial PSF sigma relative to the lateral one, in physical units.
    cell_interior : float
        "cells" only: brightness of the cell interior relative to the membrane.
    """

    shape: tuple[int, ...] = (256, 256)
    kind: str = "nuclei"
    n_objects: tuple[int, int] | int | None = None
    density: float | None = None
    radius: Range | float = (6.0, 12.0)
    eccentricity: Range | float = (0.0, 0.75)
    max_overlap: float = 0.1
    cluster: float | None = None
    brightness_spread: float = 0.3
    texture: Range | float = (0.15, 0.35)
    blur_sigma: Range | float = (0.8, 1.5)
    photon_scale: Range | float = (80.0, 400.0)
    read_noise: Range | float = (1.0, 4.0)
    background: Range | float = (0.05, 0.15)
    illumination: Range | float = (0.1, 0.35)
    dtype: str = "uint16"
    z_anisotropy: float = 2.0
    axial_blur: float = 2.5
    cell_interior: float = 0.2

    def __post_init__(self) -> None:
        """Validate every field and normalise ranges to ``(low, high)`` float pairs."""
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else None
        if shape is None or len(shape) not in (2, 3) or not all(is_int(s) and s > 0 for s in shape):
            raise ValueError(f"shape must be (Y, X) or (Z, Y, X) positive ints, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        if self.kind not in ("nuclei", "cells"):
            raise ValueError(f"kind must be 'nuclei' or 'cells', got {self.kind!r}")
        if self.dtype not in ("uint8", "uint16"):
            raise ValueError(f"dtype must be 'uint8' or 'uint16', got {self.dtype!r}")
        if self.n_objects is not None:
            lo_hi = _as_range("n_objects", self.n_objects)
            if lo_hi[0] < 0 or not all(float(v).is_integer() for v in lo_hi):
                raise ValueError(f"n_objects must be non-negative integers, got {self.n_objects!r}")
            object.__setattr__(self, "n_objects", (int(lo_hi[0]), int(lo_hi[1])))
        for name in _RANGE_FIELDS:
            object.__setattr__(self, name, _as_range(name, getattr(self, name)))
        if self.density is not None:
            _check_between("density", self.density, 0.0, 1.0, low_open=True)
        _check_between("max_overlap", self.max_overlap, 0.0, 0.5)
        if self.cluster is not None:
            _check_between("cluster", self.cluster, 0.0, 1.0)
        _check_between("eccentricity", pair(self.eccentricity)[1], 0.0, 0.95)
        _check_between("eccentricity", pair(self.eccentricity)[0], 0.0, 0.95)
        _check_between("illumination", pair(self.illumination)[1], 0.0, 0.95)
        _check_between("cell_interior", self.cell_interior, 0.0, 1.0)
        for name in ("brightness_spread", "axial_blur"):
            _check_between(name, getattr(self, name), 0.0, np.inf)
        _check_between("z_anisotropy", self.z_anisotropy, 0.0, np.inf, low_open=True)
        for name in ("radius", "photon_scale"):
            if pair(getattr(self, name))[0] <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("texture", "blur_sigma", "read_noise", "background", "illumination"):
            if pair(getattr(self, name))[0] < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


def is_int(value: object) -> bool:
    """Tell whether ``value`` is an int (Python or numpy); bools are not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value: Range | float) -> Range:
    """Return a field's value as a ``(low, high)`` pair (``SynthParams`` already stores pairs)."""
    if isinstance(value, tuple):
        return (float(value[0]), float(value[1]))
    return (float(value), float(value))


def _as_range(name: str, value: object) -> Range:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        lo = hi = float(value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        lo, hi = float(value[0]), float(value[1])
    else:
        raise TypeError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    return (lo, hi)


def _check_between(name: str, value: float, lo: float, hi: float, low_open: bool = False) -> None:
    too_low = value <= lo if low_open else value < lo
    if not np.isfinite(value) or too_low or value > hi:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{lo}, {hi}], got {value!r}")


#: Training distribution for ``tiny-synth``: moderate sizes and noise.
TRAIN_PRESET = SynthParams()

#: Held-out distribution: a wider size range, more elongated objects, dimmer
#: and noisier images, stronger blur and uneven illumination. Use it to measure
#: generalisation beyond the training distribution.
HELDOUT_PRESET = SynthParams(
    radius=(4.0, 18.0),
    eccentricity=(0.0, 0.85),
    max_overlap=0.15,
    brightness_spread=0.4,
    texture=(0.3, 0.5),
    blur_sigma=(1.2, 2.0),
    photon_scale=(40.0, 120.0),
    read_noise=(3.0, 6.0),
    background=(0.1, 0.25),
    illumination=(0.3, 0.5),
)
