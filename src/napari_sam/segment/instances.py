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
    """
    labels = np.zeros(shape, dtype=np.uint32)
    limit = max_area_fraction * shape[0] * shape[1]
    next_id = 1
    for rec in sorted(records, key=lambda r: r.area):
        if rec.area > limit:
            continue
        r0, c0, r1, c1 = (int(v) for v in rec.box)
        region = labels[r0 : r1 + 1, c0 : c1 + 1]
        if int(np.count_nonzero(rec.patch & (region == 0))) < max(1, min_area):
            continue
        write_mask(labels, rec.patch, _PLAIN, mode="keep", instance_id=next_id, offset=(r0, c0))
        next_id += 1
    return labels


def write_instances(
    target: np.ndarray,
    labels: np.ndarray,
    scheme: LabelScheme,
    class_id: int | None = None,
    mode: str = "keep",
    first_instance: int | None = None,
) -> dict[int, int]:
    """Write every object of ``labels`` into ``target`` (same shape) with ``write_mask``.

    Parameters
    ----------
    target : integer array, written in place
    labels : integer array of ``target``'s shape; object k becomes instance
        ``first_instance + k - 1`` of ``class_id``
    scheme, class_id, mode : as for :func:`napari_sam.labels.write_mask`
    first_instance : int, optional
        Default: the next free instance of the class in ``target``.

    Returns
    -------
    dict
        ``{object id in labels: label ID written}``.
    """
    if target.shape != labels.shape:
        raise ValueError(f"target of shape {target.shape} does not match labels of shape {labels.shape}")
    base = scheme.next_instance(target, class_id) if first_instance is None else int(first_instance)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return {}
    top = base + int(ids.max()) - 1
    if top > scheme.max_instance(target.dtype):
        raise LabelSpaceFullError(
            f"{ids.size} new objects need instance IDs up to {top}, above the limit "
            f"{scheme.max_instance(target.dtype)} of this label scheme; use a larger divisor or a "
            "wider dtype"
        )
    written: dict[int, int] = {}
    boxes = ndi.find_objects(labels.astype(np.int64, copy=False), max_label=int(ids.max()))
    for obj in ids.tolist():
        box = boxes[obj - 1]
        if box is None:
            continue
        patch = labels[box] == obj
        start = tuple(s.start for s in box)
        written[obj] = write_mask(
            target, patch, scheme, class_id=class_id, mode=mode,  # type: ignore[arg-type]
            instance_id=base + obj - 1, offset=start,
        )
    return written
