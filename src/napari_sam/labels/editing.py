"""Writing masks into label arrays without clobbering, relabelling, panoptic split/merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sam.labels.scheme import LabelScheme, Mode, _as_int, _check_labels


def choose_dtype(existing: Any = None) -> np.dtype:
    """dtype for a label array: uint32, unless ``existing`` (a dtype or array) is a wider int."""
    if existing is not None:
        dtype = getattr(existing, "dtype", None)
        dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(existing)
        if dtype.kind in "iu" and dtype.itemsize > 4:
            return dtype
    return np.dtype(np.uint32)


def _fitting_dtype(largest: int, preferred: Any = None) -> np.dtype:
    for dtype in (choose_dtype(preferred), np.dtype(np.uint64)):
        if largest <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"label ID {largest} does not fit in 64 bits; use a smaller divisor")


def write_mask(
    labels: np.ndarray,
    mask: Any,
    scheme: LabelScheme,
    class_id: int | None = None,
    mode: Mode = "keep",
    instance_id: int | None = None,
    offset: Sequence[int] | None = None,
) -> int:
    """Write one object into ``labels`` in place and return its label ID.

    Parameters
    ----------
    labels : numpy.ndarray
        Writable integer label array, any shape, e.g. (Y, X) or (Z, Y, X). To write a 2D
        mask on plane z of a stack, pass the view ``labels[z]``.
    mask : array of bool (or of 0/1 integers)
        The object, of ``labels``' shape, or of a sub-region starting at ``offset``.
    scheme : LabelScheme
        Decides the ID: ``scheme.encode(class_id, instance_id)``.
    class_id : int, optional
        Required for a panoptic scheme (and must be in its class table); None for plain.
    mode : {"keep", "replace", "same_class"}
        "keep": only background (0) pixels change. "replace": every mask pixel changes.
        "same_class": background pixels and pixels of the same class change; with a plain
        scheme all objects share one class, so it acts like "replace".
    instance_id : int, optional
        Write under this instance (to extend or refine an existing object); default
        `LabelScheme.next_instance`.
    offset : sequence of int, optional
        Index in ``labels`` of the mask's first pixel, one per axis; default all 0.

    Returns
    -------
    int
        The label ID written. An empty mask, or a "keep" write onto labelled pixels only,
        writes nothing and still returns the ID (no error).
    """
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy array to write in place, got {type(labels)}")
    if not labels.flags.writeable:
        raise ValueError("labels is read-only; pass a writable copy (labels.copy())")
    _check_labels(labels)
    mask = np.asarray(mask)
    if mask.dtype.kind in "iu":
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise TypeError("integer mask must hold only 0 and 1; for labels use labels == id")
        mask = mask.astype(bool)
    elif mask.dtype != bool:
        raise TypeError(f"mask must be boolean, got {mask.dtype}; threshold it (mask > 0.5)")
    if offset is None and mask.shape != labels.shape:
        raise ValueError(
            f"mask shape {mask.shape} differs from labels shape {labels.shape}; for one plane "
            "pass labels[z], for a sub-region pass offset="
        )
    start = (0,) * labels.ndim if offset is None else tuple(_as_int(o, "offset") for o in offset)
    if len(start) != labels.ndim or mask.ndim != labels.ndim:
        raise ValueError(f"mask ({mask.ndim}D) and offset must match the labels' {labels.ndim}D")
    if any(o < 0 or o + m > n for o, m, n in zip(start, mask.shape, labels.shape)):
        raise ValueError(
            f"mask of shape {mask.shape} at offset {start} does not fit in labels of shape "
            f"{labels.shape}"
        )
    if mode not in ("keep", "replace", "same_class"):
        raise ValueError(f"mode must be 'keep', 'replace' or 'same_class', got {mode!r}")
    if scheme.is_panoptic:
        if class_id is None:
            raise ValueError("a panoptic scheme needs class_id: which class is this object?")
        scheme.info(class_id)
    elif class_id is not None:
        raise ValueError("a plain scheme has no classes: pass class_id=None")
    if instance_id is None:
        instance_id = scheme.next_instance(labels, class_id)
    elif not scheme.is_panoptic and _as_int(instance_id, "instance_id") < 1:
        raise ValueError(f"instance_id must be >= 1 for plain labels, got {instance_id}")
    label_id = scheme.encode(class_id, instance_id)
    if label_id > np.iinfo(labels.dtype).max:
        raise TypeError(
            f"label ID {label_id} does not fit in labels of dtype {labels.dtype} "
            f"(max {np.iinfo(labels.dtype).max}); convert with labels.astype(np.uint32)"
        )
    region = labels[tuple(slice(o, o + m) for o, m in zip(start, mask.shape))]
    if mode == "keep":
        mask = mask & (region == 0)
    elif mode == "same_class" and scheme.divisor is not None:
        low = _as_int(class_id, "class_id") * scheme.divisor
        high = min(low + scheme.divisor - 1, np.iinfo(labels.dtype).max)
        mask = mask & ((region == 0) | ((region >= low) & (region <= high)))
    region[mask] = label_id
    return label_id


def relabel(
    labels: Any, old_scheme: LabelScheme, new_scheme: LabelScheme, class_id: int | None = None
) -> np.ndarray:
    """Re-encode ``labels`` from ``old_scheme`` to ``new_scheme``; returns a new array.

    Panoptic -> panoptic keeps (class, instance) (e.g. divisor 1000 -> 10000). Plain ->
    panoptic puts every object in ``class_id``. Panoptic -> plain numbers the distinct
    labels 1..n in increasing order. Raises ValueError if an instance does not fit the
    new divisor or a class is missing from the new table. dtype: `choose_dtype` of the
    input, or uint64 if the IDs need it.
    """
    arr = _check_labels(labels)
    if not new_scheme.is_panoptic:
        if not old_scheme.is_panoptic:
            return arr.astype(choose_dtype(arr), copy=True)
        uniq, inverse = np.unique(arr, return_inverse=True)
        new_ids = np.cumsum(uniq != 0).astype(_fitting_dtype(int(uniq.size), arr))
        return new_ids[inverse].reshape(arr.shape)
    if old_scheme.is_panoptic:
        classes, instances = old_scheme.decode(arr)
        if np.any((classes == 0) & (instances != 0)):
            raise ValueError(f"labels below the divisor {old_scheme.divisor} have no class")
    else:
        if class_id is None:
            raise ValueError("converting plain labels to panoptic needs class_id for the objects")
        new_scheme.info(class_id)
        classes, instances = (arr > 0).astype(np.uint64) * np.uint64(class_id), arr
    return merge_panoptic(classes, instances, new_scheme)


def split_panoptic(labels: Any, scheme: LabelScheme) -> tuple[np.ndarray, np.ndarray]:
    """Split panoptic labels into ``(semantic, instance)`` arrays of ``labels``' shape.

    ``semantic`` holds class IDs (0 background); ``instance`` holds instance IDs within
    their class (0 for background and semantic-only regions). Both keep ``labels``' dtype.
    """
    scheme._require_panoptic("split_panoptic")
    return scheme.decode(labels)


def merge_panoptic(
    semantic: Any, instance: Any, scheme: LabelScheme, dtype: Any = None
) -> np.ndarray:
    """Combine class and instance arrays of one shape into panoptic labels.

    Every class present must be in ``scheme``'s table, every instance < divisor, and
    instance pixels need a class. ``dtype`` None: `choose_dtype` of the instance array
    (uint32 unless it is wider), or uint64 if the IDs need it.
    """
    divisor = scheme._require_panoptic("merge_panoptic")
    sem, inst = _check_labels(semantic), _check_labels(instance)
    if sem.shape != inst.shape:
        raise ValueError(f"semantic {sem.shape} and instance {inst.shape} shapes differ")
    if inst.size and int(inst.max()) >= divisor:
        raise ValueError(
            f"instance ID {int(inst.max())} does not fit divisor {divisor}; "
            "use a larger divisor (e.g. 10 * divisor)"
        )
    if np.any((sem == 0) & (inst != 0)):
        raise ValueError("some instance pixels have class 0 (background); give them a class")
    for cid in np.unique(sem):
        if cid:
            scheme.info(int(cid))
    largest = int(sem.max()) * divisor + int(inst.max()) if sem.size else 0
    if dtype is None:
        dtype = _fitting_dtype(largest, inst)
    elif np.dtype(dtype).kind not in "iu" or largest > np.iinfo(dtype).max:
        raise TypeError(f"label ID {largest} does not fit dtype {np.dtype(dtype)}; use uint32")
    dtype = np.dtype(dtype)
    return sem.astype(dtype) * dtype.type(divisor) + inst.astype(dtype)
