"""Turning automatic masks into instance labels, and writing labels into a user's array.

Every write goes through :func:`napari_sam.labels.write_mask`, so its modes hold: in "keep" mode
no labelled pixel of the target ever changes.

Overlaps: masks are painted from the smallest to the largest in "keep" mode, so where masks
overlap the smaller one wins (a nucleus inside a larger cell mask stays visible; the larger
object keeps only its remaining pixels). This is the same picture as painting large first and
small on top.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_sam.labels import LabelScheme, LabelSpaceFullError, write_mask
from napari_sam.segment.everything import MaskRecord

__all__ = ["paint_records", "write_instances"]

_PLAIN = LabelScheme()


def paint_records(
    records: Sequence[MaskRecord],
    shape: tuple[int, int],
    min_area: int = 1,
    max_area_fraction: float = 1.0,
    min_visible_fraction: float = 0.0,
) -> np.ndarray:
    """Instance labels (Y, X) uint32, IDs 1..n, from masks that may overlap.

    Parameters
    ----------
    records : MaskRecord sequence
    shape : (Y, X) of the plane
    min_area : int
        Objects with fewer visible pixels (after smaller ones took theirs) are dropped.
    max_area_fraction : float
        Masks covering more than this fraction of the plane are dropped (in microscopy such a
        mask is almost always the background or the whole field).
    min_visible_fraction : float
        Masks left with less than this fraction of their pixels visible are dropped.
    """
    labels = np.zeros(shape, dtype=np.uint32)
    limit = max_area_fraction * shape[0] * shape[1]
    next_id = 1
    for rec in sorted(records, key=lambda r: r.area):
        if rec.area > limit:
            continue
        r0, c0, r1, c1 = (int(v) for v in rec.box)
        region = labels[r0 : r1 + 1, c0 : c1 + 1]
        visible = int(np.count_nonzero(rec.patch & (region == 0)))
        if visible < max(1, min_area) or visible < min_visible_fraction * rec.area:
            continue
        write_mask(labels, rec.patch, _PLAIN, mode="keep", instance_id=next_id, offset=(r0, c0))
        next_id += 1
    return labels


def _free_instances(target: np.ndarray, scheme: LabelScheme, class_id: int | None, n: int) -> np.ndarray:
    """``n`` unused instance IDs of ``class_id`` in ``target``: above the largest in use when they
    fit (IDs are not reused while larger ones exist), else the smallest free ones."""
    limit = scheme.max_instance(target.dtype)
    classes, instances = scheme.decode(target)
    in_class = target > 0
    if scheme.is_panoptic:
        in_class &= classes == class_id
    used = np.unique(instances[in_class])
    largest = int(used.max()) if used.size else 0
    if largest + n <= limit:
        return np.arange(largest + 1, largest + n + 1, dtype=np.int64)
    free = np.setdiff1d(np.arange(1, min(limit, largest + n) + 1, dtype=np.int64), used)[:n]
    if len(free) < n:
        raise LabelSpaceFullError(
            f"{n} new objects need free instance IDs but only {len(free)} of {limit} are left "
            f"for this class; use a larger divisor (relabel) or a wider dtype"
        )
    return free


def write_instances(
    target: np.ndarray,
    labels: np.ndarray,
    scheme: LabelScheme,
    class_id: int | None = None,
    mode: str = "keep",
) -> dict[int, int]:
    """Write every object of ``labels`` into ``target`` (same shape) with ``write_mask``.

    Parameters
    ----------
    target : integer array, written in place
    labels : integer array of ``target``'s shape (0 = background); each object gets a new,
        unused instance ID of ``class_id`` in ``target``, in increasing order of its ID here
    scheme, class_id, mode : as for :func:`napari_sam.labels.write_mask`

    Returns
    -------
    dict
        ``{object id in labels: label ID written}``.

    Raises
    ------
    LabelSpaceFullError
        Not enough unused instance IDs for the new objects.
    """
    if target.shape != labels.shape:
        raise ValueError(f"target of shape {target.shape} does not match labels of shape {labels.shape}")
    if scheme.is_panoptic:
        scheme.info(class_id)  # type: ignore[arg-type]  # a clear error for a missing class
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return {}
    instances = _free_instances(target, scheme, class_id, ids.size)
    written: dict[int, int] = {}
    boxes = ndi.find_objects(labels.astype(np.int64, copy=False), max_label=int(ids.max()))
    for obj, instance in zip(ids.tolist(), instances.tolist()):
        box = boxes[obj - 1]
        patch = labels[box] == obj
        start = tuple(s.start for s in box)
        written[obj] = write_mask(
            target, patch, scheme, class_id=class_id, mode=mode,  # type: ignore[arg-type]
            instance_id=instance, offset=start,
        )
    return written
