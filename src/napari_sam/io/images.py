"""Opening images lazily: TIFF / OME-TIFF, zarr / OME-Zarr, npy, png; folders; signatures."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".zarr", ".npy", ".png", ".jpg", ".jpeg")
_AXIS_NAMES = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X", "I": "Z", "Q": "Z"}


class InputError(ValueError):
    """An input file or folder that cannot be read as an image; the message says why."""


@dataclass
class Image:
    """An opened image: lazy data plus its axes.

    Attributes
    ----------
    data
        numpy (possibly memory-mapped), zarr or dask array in napari order, channel last.
    axes
        One letter per axis of ``data`` from ``"TZYXC"``, e.g. ``"ZYX"`` or ``"YXC"``.
    path
        Where it was read from.
    """

    data: Any = field(repr=False)
    axes: str
    path: Path

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or any(
        (path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")
    )


def expand_inputs(path: str | os.PathLike[str]) -> list[Path]:
    """The images an input path stands for: itself, or the images in a plain folder (sorted).

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    InputError
        A folder without any TIFF / zarr / npy / png / jpg image in it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"input {p} does not exist")
    if p.is_file() or _is_zarr(p):
        return [p]
    found = sorted(
        c for c in p.iterdir() if c.suffix.lower() in IMAGE_SUFFIXES and not c.name.startswith(".")
    )
    if not found:
        raise InputError(f"folder {p} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _guess_axes(shape: tuple[int, ...]) -> str:
    rgb = len(shape) >= 3 and shape[-1] in (1, 3, 4) and min(shape[-3:-1]) > 4
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXC" if rgb else "ZYX"
    if len(shape) == 4:
        return "ZYXC" if rgb else "TZYX"
    if len(shape) == 5:
        return "TZYXC" if rgb else "TZCYX"
    raise InputError(f"unsupported image dimensions {shape}: napari-sam reads 2D to 5D images")


def _canonical(data: Any, axes: str, path: Path) -> Image:
    """Drop singleton non-YX axes and order the rest T, Z, Y, X, C (lazily)."""
    axes = "".join(_AXIS_NAMES.get(a.upper(), "?") for a in axes)
    if len(axes) != data.ndim or "?" in axes or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
        axes = _guess_axes(tuple(data.shape))
    keep = [i for i, a in enumerate(axes) if a in "YX" or data.shape[i] != 1]
    order = sorted(keep, key=lambda i: "TZYXC".index(axes[i]))
    new_axes = "".join(axes[i] for i in order)
    if order != list(range(data.ndim)):
        if not isinstance(data, np.ndarray):
            import dask.array as da

            data = da.from_zarr(data) if not hasattr(data, "dask") else data
        index = tuple(slice(None) if i in keep else 0 for i in range(data.ndim))
        data = data[index]
        data = data.transpose([keep.index(i) for i in order])
    if min(data.shape[new_axes.index("Y")], data.shape[new_axes.index("X")]) < 2:
        raise InputError(f"{path}: image of shape {tuple(data.shape)} is too small to segment")
    if int(np.prod(data.shape)) == 0:
        raise InputError(f"{path}: the image is empty (shape {tuple(data.shape)})")
    return Image(data, new_axes, path)


def _open_tiff(path: Path, key: Any) -> Image:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError as err:
        raise InputError(f"{path} is not a readable TIFF file ({err})") from err
    with tif:
        if not tif.series:
            raise InputError(f"{path} holds no images")
        index = int(key) if key is not None else 0
        if not 0 <= index < len(tif.series):
            raise InputError(f"{path} has {len(tif.series)} image series; --key {key} is not one")
        series = tif.series[index]
        axes = series.axes if (tif.is_ome or tif.is_imagej) else ""
        contiguous = series.dataoffset is not None
        if contiguous:
            data = tifffile.memmap(path, series=index, mode="r")
    if not contiguous:
        import zarr

        data = zarr.open(tifffile.imread(path, aszarr=True, series=index), mode="r")
    return _canonical(data, axes, path)


def _open_zarr(path: Path, key: str | None) -> Image:
    import zarr

    node = zarr.open(str(path), mode="r")
    axes = ""
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if key is None and multiscales:
            level0 = multiscales[0]["datasets"][0]["path"]
            names = multiscales[0].get("axes", [])
            axes = "".join((a["name"] if isinstance(a, dict) else a)[0].upper() for a in names)
            node = node[level0]
        elif key is not None:
            if key not in node:
                raise InputError(f"{path} has no array {key!r}; it holds {sorted(node.keys())}")
            node = node[key]
        else:
            names = sorted(node.array_keys())
            if len(names) != 1:
                raise InputError(
                    f"{path} is a zarr group with arrays {names}; choose one with --key"
                )
            node = node[names[0]]
    metadata = getattr(node, "metadata", None)  # zarr 3 arrays carry dimension names there
    names = getattr(metadata, "dimension_names", None) or dict(node.attrs).get("_ARRAY_DIMENSIONS")
    if not axes and names and all(names):
        axes = "".join(str(a)[0].upper() for a in names)
    return _canonical(node, axes, path)


def open_image(path: str | os.PathLike[str], key: Any = None) -> Image:
    """Open an image lazily (see the module docstring for formats and axes).

    Parameters
    ----------
    path
        A TIFF / OME-TIFF, a zarr or OME-Zarr store, an ``.npy``, ``.png`` or ``.jpg`` file.
    key
        TIFF: the series index; zarr group: the array path (default: OME-Zarr level 0, or the
        group's only array).

    Raises
    ------
    FileNotFoundError, InputError
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"input {p} does not exist")
    if p.is_dir() and not _is_zarr(p):
        raise InputError(f"{p} is a folder of images; process its files one by one")
    if _is_zarr(p):
        return _open_zarr(p, key)
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(p, key)
    if suffix == ".npy":
        return _canonical(np.load(p, mmap_mode="r"), "", p)
    if suffix in (".png", ".jpg", ".jpeg"):
        import skimage.io

        return _canonical(np.asarray(skimage.io.imread(p)), "", p)
    raise InputError(f"{p}: unsupported image format {suffix!r}; use {', '.join(IMAGE_SUFFIXES)}")


def open_stack(
    path: str | os.PathLike[str], key: Any = None, channel: int | None = None
) -> Image:
    """Open a 2D image (Y, X[, C]) or a 3D stack (Z, Y, X[, C]) with C in {1, 3}.

    ``channel`` picks one channel of a multi-channel image. Other dimensions or channel
    counts raise :class:`InputError` naming what to change.
    """
    image = open_image(path, key)
    data, axes = image.data, image.axes
    if channel is not None:
        if "C" not in axes:
            raise InputError(f"{path} has no channel axis (axes {axes}); drop --channel")
        if not 0 <= channel < data.shape[-1]:
            raise InputError(f"{path} has {data.shape[-1]} channels; --channel {channel} is not one")
        data, axes = data[..., channel], axes[:-1]
    if "C" in axes and data.shape[-1] not in (1, 3):
        raise InputError(f"{path} has {data.shape[-1]} channels (axes {axes}); pick one with --channel C")
    if axes.replace("C", "") not in ("YX", "ZYX"):
        raise InputError(
            f"{path} has shape {tuple(data.shape)} with axes {axes}; napari-sam needs a 2D (Y, X) "
            "or 3D (Z, Y, X) image, optionally with 1 or 3 channels last"
        )
    return Image(data, axes, image.path)


def read_image(path: str | os.PathLike[str], key: Any = None) -> Any:
    """The data of :func:`open_image` (lazy array, napari order, channel last)."""
    return open_image(path, key).data


def plane_digest(plane: Any) -> bytes:
    """16-byte blake2b digest of one plane's values (an input to :func:`combine_signature`)."""
    return hashlib.blake2b(np.ascontiguousarray(np.asarray(plane)).tobytes(), digest_size=16).digest()


def combine_signature(shape: tuple[int, ...], dtype: Any, digests: Any) -> str:
    """The image signature from its shape, dtype and per-plane digests (in C order of planes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(int(s) for s in shape), str(np.dtype(dtype)))).encode())
    for digest in digests:
        h.update(digest)
    return "blake2b:" + h.hexdigest()


def image_signature(data: Any, index_ndim: int | None = None) -> str:
    """``"blake2b:<hex>"`` of an image's shape, dtype and values, read one plane at a time.

    ``index_ndim`` leading axes index the planes (default ``ndim - 2``; pass ``ndim - 3`` for
    channel-last data such as (Z, Y, X, C)).
    """
    lead = data.shape[: data.ndim - 2 if index_ndim is None else index_ndim]
    digests = (plane_digest(data[i]) for i in np.ndindex(*lead))
    return combine_signature(data.shape, data.dtype, digests)

