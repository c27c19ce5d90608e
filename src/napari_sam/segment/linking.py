"""Linking per-slice instance labels through a stack, so one object keeps one ID through z.

Each slice is segmented on its own (IDs 1..n per slice). Consecutive slices are then matched by
mask overlap: the IoU of every pair of objects, and an optimal one-to-one assignment
(:func:`scipy.optimize.linear_sum_assignment`, maximising total IoU). A pair is linked when its
IoU is at least ``min_iou``; an object without a partner starts a new ID. Objects are linked
only between adjacent slices (an object missing on one slice and back on the next gets a new
ID).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["iou_table", "link_slices", "match_labels"]


def iou_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every object of label image ``a`` with every object of ``b`` (same shape).

    Returns
    -------
    ids_a : (N,) object IDs of ``a`` (> 0, sorted)
    ids_b : (M,) object IDs of ``b``
    iou : (N, M) float64
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label images differ in size: {a.size} vs {b.size} pixels")
    ids_a, inv_a = np.unique(a, return_inverse=True)
    ids_b, inv_b = np.unique(b, return_inverse=True)
    area_a = np.bincount(inv_a, minlength=len(ids_a))
    area_b = np.bincount(inv_b, minlength=len(ids_b))
    both = (a > 0) & (b > 0)
    inter = np.zeros((len(ids_a), len(ids_b)), dtype=np.float64)
    np.add.at(inter, (inv_a[both], inv_b[both]), 1.0)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep_a, keep_b = ids_a > 0, ids_b > 0
    return ids_a[keep_a], ids_b[keep_b], iou[np.ix_(keep_a, keep_b)]


def match_labels(previous: np.ndarray, current: np.ndarray, min_iou: float = 0.25) -> dict[int, int]:
    """Optimal one-to-one matching of the objects of ``current`` to those of ``previous``.

    Returns
    -------
    dict
        ``{current_id: previous_id}`` for the pairs with IoU >= ``min_iou``.
    """
    ids_p, ids_c, iou = iou_table(previous, current)
    if iou.size == 0:
        return {}
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {
        int(ids_c[c]): int(ids_p[r]) for r, c in zip(rows, cols) if iou[r, c] >= min_iou and iou[r, c] > 0
    }


def link_slices(labels: np.ndarray, min_iou: float = 0.25, first_id: int = 1) -> np.ndarray:
    """Relabel a (Z, Y, X) stack of independently labelled slices so objects keep IDs through z.

    Parameters
    ----------
    labels : (Z, Y, X) integer array
        Instance labels per slice (0 = background); IDs need not be unique across slices.
    min_iou : float
        Least IoU between an object and its partner on the previous slice.
    first_id : int
        The first ID given out.

    Returns
    -------
    (Z, Y, X) uint32 (uint64 if the IDs need it)
        IDs first_id, first_id + 1, ... in order of first appearance (slice by slice, then by
        the per-slice ID).
    """
    stack = np.asarray(labels)
    if stack.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) label stack, got shape {stack.shape}")
    if stack.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {stack.dtype}")
    out = np.zeros(stack.shape, dtype=np.uint64)
    next_id = int(first_id)
    for z in range(stack.shape[0]):
        links = match_labels(out[z - 1], stack[z], min_iou) if z else {}
        ids = np.unique(stack[z])
        ids = ids[ids > 0]
        lut_ids = np.zeros(len(ids), dtype=np.uint64)
        for i, local in enumerate(ids.tolist()):
            if local in links:
                lut_ids[i] = links[local]
            else:
                lut_ids[i] = next_id
                next_id += 1
        pos = np.searchsorted(ids, stack[z])
        hit = stack[z] > 0
        out[z][hit] = lut_ids[pos[hit]]
    if next_id - 1 <= np.iinfo(np.uint32).max:
        return out.astype(np.uint32)
    return out
