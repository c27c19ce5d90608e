"""Writing and reading label results with their label scheme and a provenance record."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam.io.images import TIFF_SUFFIXES, InputError, _is_zarr
from napari_sam.labels import LabelScheme, from_metadata, to_metadata


class OutputExistsError(FileExistsError):
    """The output exists and overwriting was not asked for."""


def provenance(
    model: Any,
    params: Mapping[str, Any],
    input_path: str | os.PathLike[str] | None,
    input_signature: str | None,
) -> dict[str, Any]:
    """A JSON-serialisable record of how a result was made.

    Parameters
    ----------
    model
        A loaded :class:`~napari_sam.model.Sam` (its ``name``, ``weights_hash``, ``precision``
        and config are recorded), or a model name.
    params
        The parameters of the run (prompts, thresholds, ...), JSON-serialisable.
    input_path, input_signature
        The input and its content signature (:func:`image_signature`).
    """
    import napari_sam

    if isinstance(model, str):
        model_rec: dict[str, Any] = {"name": model}
    else:
        config = getattr(model, "config", None)
        model_rec = {
            "name": getattr(model, "name", None),
            "weights_sha256": getattr(model, "weights_hash", None),
            "precision": getattr(model, "precision", None),
            "config": config.to_dict() if hasattr(config, "to_dict") else None,
        }
    return json.loads(json.dumps({
        "napari_sam_version": napari_sam.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_rec,
        "params": dict(params),
        "input": {
            "path": str(Path(input_path).resolve()) if input_path is not None else None,
            "signature": input_signature,
        },
    }, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot record {type(value).__name__} in the metadata")


def _record(scheme: LabelScheme, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"napari_sam": {**to_metadata(scheme), "record": dict(metadata or {})}}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the JSON sidecar of a TIFF result is: ``mask.tif`` -> ``mask.json``."""
    return Path(path).with_suffix(".json")


def check_writable(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse an existing output (and its sidecar) unless ``overwrite``; check the suffix.

    Raises
    ------
    OutputExistsError, InputError
    """
    p = Path(path).expanduser()
    if p.suffix.lower() not in (*TIFF_SUFFIXES, ".zarr"):
        raise InputError(f"output {p}: use a .tif, .tiff or .zarr name")
    others = [p] + ([sidecar_path(p)] if p.suffix.lower() in TIFF_SUFFIXES else [])
    existing = [o for o in others if o.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} exists; choose another name or pass --overwrite")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"output folder {p.parent} does not exist")
    return p


def write_labels(
    path: str | os.PathLike[str],
    labels: Any,
    scheme: LabelScheme | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label array with its scheme and record as TIFF (+ JSON sidecar) or zarr.

    Parameters
    ----------
    path
        ``*.tif`` / ``*.tiff`` or ``*.zarr``.
    labels
        Integer array (Y, X) or (Z, Y, X), ...; numpy, zarr or dask (written plane by plane).
    scheme
        The label scheme; default plain instances.
    metadata
        The record to store (e.g. :func:`provenance`).
    overwrite
        Replace an existing output; otherwise :class:`OutputExistsError`.
    """
    p = check_writable(path, overwrite)
    scheme = scheme if scheme is not None else LabelScheme()
    dtype = np.dtype(labels.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(f"labels must be an integer array, got {dtype}")
    record = _record(scheme, metadata)
    if p.suffix.lower() == ".zarr":
        import shutil

        import zarr

        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        chunks = (1,) * (labels.ndim - 2) + tuple(min(s, 1024) for s in labels.shape[-2:])
        out = zarr.open_array(str(p), mode="w", shape=labels.shape, chunks=chunks, dtype=dtype)
        for index in np.ndindex(*labels.shape[:-2]):
            out[index] = np.asarray(labels[index])
        out.attrs.update(record)
        return p
    import tifffile

    text = json.dumps(record)
    planes = (np.asarray(labels[i]) for i in np.ndindex(*labels.shape[:-2]))
    tifffile.imwrite(
        p, planes if labels.ndim > 2 else np.asarray(labels), shape=labels.shape, dtype=dtype,
        description=text, metadata=None, compression="zlib", photometric="minisblack",
    )
    sidecar_path(p).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return p


def read_labels(path: str | os.PathLike[str]) -> tuple[Any, LabelScheme, dict[str, Any]]:
    """Read a result of :func:`write_labels`: ``(labels, scheme, record)``.

    A label image without napari-sam metadata gives the plain scheme and an empty record.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"labels {p} do not exist")
    record: Mapping[str, Any] = {}
    if _is_zarr(p):
        import zarr

        labels = zarr.open_array(str(p), mode="r")
        record = dict(labels.attrs)
    else:
        import tifffile

        labels = tifffile.imread(p)
        with tifffile.TiffFile(p) as tif:
            text = tif.pages[0].description
        if not text.startswith("{") and sidecar_path(p).is_file():
            text = sidecar_path(p).read_text(encoding="utf-8")
        try:
            record = json.loads(text) if text.startswith("{") else {}
        except json.JSONDecodeError:
            record = {}
    info = record.get("napari_sam") if isinstance(record, Mapping) else None
    if not info:
        return labels, LabelScheme(), {}
    return labels, from_metadata(info), dict(info.get("record", {}))
