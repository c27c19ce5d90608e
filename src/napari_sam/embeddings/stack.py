"""One image stack seen as a grid of 2D planes, read one plane (or one region) at a time.

Works with numpy, dask and zarr arrays (anything with ``shape``, ``dtype`` and numpy-style
indexing): only the plane asked for is read, never the whole stack.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from napari_sam.embeddings.errors import StackIndexError
from napari_sam.preprocess import ImageError, IntensityNorm, check_dtype

NORM_SAMPLE_PLANES = 16
NORM_SAMPLE_VALUES = 4_000_000

Region = tuple[int, int, int, int]  # (row0, col0, row1, col1), end exclusive


class StackSource:
    """Axes bookkeeping and plane reading for an nD image.

    Parameters
    ----------
    array : array-like
        (..., Y, X) or (..., Y, X, C); numpy, dask or zarr.
    channel_axis : int, optional
        Axis holding colour channels (1, 3, or 4 = RGBA, alpha dropped). By default the last
        axis is taken as channels when it has 3 or 4 entries (napari's RGB rule).
        The two last non-channel axes are (Y, X); the remaining axes index the planes.
    """

    def __init__(self, array: Any, channel_axis: int | None = None) -> None:
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            array = np.asarray(array)
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        ndim = len(self.shape)
        check_dtype(np.dtype(array.dtype))
        if channel_axis is None and ndim >= 3 and self.shape[-1] in (3, 4):
            channel_axis = ndim - 1
        if channel_axis is not None:
            if not -ndim <= int(channel_axis) < ndim:
                raise ImageError(f"channel_axis {channel_axis} does not exist in an image of shape {self.shape}")
            channel_axis = int(channel_axis) % ndim
            if self.shape[channel_axis] not in (1, 3, 4):
                raise ImageError(
                    f"axis {channel_axis} has {self.shape[channel_axis]} channels; SAM takes 1 or 3 "
                    "(or RGBA): select one channel or three channels first"
                )
        self.channel_axis = channel_axis
        others = [a for a in range(ndim) if a != channel_axis]
        if len(others) < 2:
            raise ImageError(f"expected an image with at least 2 spatial axes, got shape {self.shape}")
        self.spatial_axes = (others[-2], others[-1])
        self.index_axes = tuple(others[:-2])
        self.index_shape = tuple(self.shape[a] for a in self.index_axes)
        self.plane_shape = (self.shape[self.spatial_axes[0]], self.shape[self.spatial_axes[1]])
        if min(self.plane_shape) < 2:
            raise ImageError(f"planes of shape {self.plane_shape} are too small to segment")
        self.channels = 1 if channel_axis is None else min(self.shape[channel_axis], 3)

    @property
    def n_planes(self) -> int:
        return int(np.prod(self.index_shape, dtype=np.int64))

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Every plane index, in C order (``()`` once for a 2D image)."""
        return itertools.product(*(range(n) for n in self.index_shape))

    def normalize_index(self, index: Any) -> tuple[int, ...]:
        """An int, a tuple of ints or None/() (2D) -> a checked tuple with negatives resolved."""
        if index is None:
            index = ()
        elif isinstance(index, (int, np.integer)):
            index = (index,)
        try:
            values = tuple(index)
        except TypeError:
            raise StackIndexError(f"a slice index is a tuple of ints, got {index!r}") from None
        if len(values) != len(self.index_shape):
            raise StackIndexError(
                f"index {values} has {len(values)} entries but the stack has {len(self.index_shape)} "
                f"leading dimensions {self.index_shape} (planes of shape {self.plane_shape})"
            )
        out = []
        for value, size in zip(values, self.index_shape, strict=True):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                if isinstance(value, (float, np.floating)) and float(value).is_integer():
                    value = int(value)  # napari's dims give floats
                else:
                    raise StackIndexError(f"slice indices must be integers, got {value!r} in {values}")
            value = int(value)
            if not -size <= value < size:
                raise StackIndexError(f"index {values} is outside the stack's leading dimensions {self.index_shape}")
            out.append(value % size)
        return tuple(out)

    def read(self, index: tuple[int, ...], region: Region | None = None) -> np.ndarray:
        """Plane ``index`` (or the ``region`` of it) as (Y, X, C), C = 1 or 3, read on its own."""
        key: list[Any] = [slice(None)] * len(self.shape)
        for axis, i in zip(self.index_axes, index, strict=True):
            key[axis] = i
        if region is not None:
            key[self.spatial_axes[0]] = slice(region[0], region[2])
            key[self.spatial_axes[1]] = slice(region[1], region[3])
        data = np.asarray(self.array[tuple(key)])
        if self.channel_axis is None:
            return data[:, :, None]
        # remaining axes keep their order: move the channel axis last
        channel_pos = sum(1 for a in self.spatial_axes if a < self.channel_axis)
        data = np.moveaxis(data, channel_pos, -1)
        return data[:, :, :3]

    def plane(self, index: Any) -> np.ndarray:
        """Plane ``index`` as (Y, X) for single-channel images, else (Y, X, C)."""
        data = self.read(self.normalize_index(index))
        return data[:, :, 0] if self.channel_axis is None else data

    def sample_norm(self, n_planes: int = NORM_SAMPLE_PLANES) -> IntensityNorm:
        """Intensity normalisation from up to ``n_planes`` evenly spaced planes (robust percentiles).

        Each plane contributes at most ``NORM_SAMPLE_VALUES / n`` pixels (a fixed random sample),
        so huge planes are not converted to float in full.
        """
        total = self.n_planes
        chosen = np.unique(np.linspace(0, total - 1, min(n_planes, total)).round().astype(np.int64))
        per_plane = NORM_SAMPLE_VALUES // len(chosen)
        rng = np.random.default_rng(0)
        samples = []
        for flat in chosen:
            index = tuple(int(i) for i in np.unravel_index(flat, self.index_shape))
            pixels = self.read(index).reshape(-1, self.channels)
            if len(pixels) > per_plane:
                pixels = pixels[rng.integers(0, len(pixels), per_plane)]
            samples.append(pixels)
        return IntensityNorm.from_data(np.concatenate(samples)[None])
