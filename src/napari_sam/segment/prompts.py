"""Prompts in napari coordinates: points and boxes in 2D or in full stack coordinates.

A napari Points layer on a (Z, Y, X) stack gives points as (z, row, col); on a (T, Z, Y, X) stack as
(t, z, row, col). A Shapes rectangle gives its 4 corners, each in the same full coordinates. These
helpers turn such input into a slice index plus 2D prompts ((row, col) points; boxes
(min_row, min_col, max_row, max_col)) for :class:`napari_sam.predictor.Predictor`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_sam.predictor import PromptError
from napari_sam.segment._util import Index

__all__ = ["group_by_slice", "split_points", "parse_box", "parse_boxes"]


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise PromptError(f"{what} contain NaN or infinite coordinates")
    return array


def _slice_of(leading: np.ndarray) -> Index:
    """Round leading (z, ...) coordinates of one prompt to a slice index."""
    return tuple(int(v) for v in np.rint(leading))


def _labels_for(n: int, point_labels: ArrayLike | None) -> np.ndarray:
    if point_labels is None:
        return np.ones(n, dtype=np.int64)
    labels = np.asarray(point_labels).reshape(-1)
    if len(labels) != n:
        raise PromptError(f"{n} points but {len(labels)} point_labels")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise PromptError("point_labels must be 1 (positive) or 0 (negative)")
    return labels.astype(np.int64)


def group_by_slice(
    points: ArrayLike, point_labels: ArrayLike | None = None, n_index: int | None = None
) -> dict[Index, tuple[np.ndarray, np.ndarray]]:
    """Group points given in full stack coordinates by the slice they lie on.

    Parameters
    ----------
    points : (N, n_index + 2) array
        E.g. (z, row, col) rows from a napari Points layer on a (Z, Y, X) stack. Leading
        coordinates are rounded to the nearest slice.
    point_labels : (N,) of 1 (positive) / 0 (negative), optional
        Default all positive.
    n_index : int, optional
        Number of leading (slice) coordinates; default ``points.shape[1] - 2``.

    Returns
    -------
    dict
        ``{index: (points_2d (M, 2) (row, col), labels (M,))}`` with index a tuple of ints,
        in order of first appearance.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise PromptError(f"points must be an (N, D) array with D >= 2, got shape {pts.shape}")
    n_lead = pts.shape[1] - 2 if n_index is None else int(n_index)
    if pts.shape[1] != n_lead + 2:
        raise PromptError(
            f"points have {pts.shape[1]} coordinates; expected {n_lead + 2} "
            f"({n_lead} slice coordinate(s) then row, col)"
        )
    _finite(pts, "points")
    labels = _labels_for(len(pts), point_labels)
    groups: dict[Index, list[int]] = {}
    for i, row in enumerate(pts):
        groups.setdefault(_slice_of(row[:n_lead]), []).append(i)
    return {key: (pts[rows, n_lead:], labels[rows]) for key, rows in groups.items()}


def split_points(
    points: ArrayLike, point_labels: ArrayLike | None, n_index: int, index: Index | None
) -> tuple[Index | None, np.ndarray, np.ndarray]:
    """Points in 2D or full stack coordinates -> (slice index or None, (N, 2) points, (N,) labels).

    2D points ((N, 2) or one (row, col) pair) keep ``index`` as given. Points with ``n_index``
    leading coordinates must all lie on one slice (else :class:`PromptError` listing the slices;
    split them with :func:`group_by_slice`), and that slice must agree with ``index`` if given.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size in (2, n_index + 2):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] not in (2, n_index + 2):
        want = "(N, 2) as (row, col)" + (f" or (N, {n_index + 2}) in stack coordinates" if n_index else "")
        raise PromptError(f"points must be {want}, got shape {pts.shape}")
    _finite(pts, "points")
    if pts.shape[1] == 2:
        return index, pts, _labels_for(len(pts), point_labels)
    groups = group_by_slice(pts, point_labels, n_index)
    if len(groups) > 1:
        slices = ", ".join(str(k) for k in groups)
        raise PromptError(
            f"the points lie on {len(groups)} different slices ({slices}); segment one slice at a "
            "time (napari_sam.segment.group_by_slice splits them)"
        )
    (key, (pts2d, labels)), = groups.items()
    if index is not None and key != index:
        raise PromptError(f"the points lie on slice {key} but index={index} was given")
    return key, pts2d, labels


def parse_box(box: ArrayLike, n_index: int, index: Index | None) -> tuple[Index | None, np.ndarray]:
    """One box -> (slice index or None, (4,) (min_row, min_col, max_row, max_col)).

    Accepted: (4,) (min_row, min_col, max_row, max_col); or corners (2 or 4, n_index + 2) as a
    napari Shapes rectangle gives them (e.g. (z, row, col) rows), all on one slice; or 2D corners
    (2 or 4, 2).
    """
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape == (4,):
        return index, _finite(arr, "box")
    if arr.ndim == 2 and arr.shape[0] in (2, 4) and arr.shape[1] in (2, n_index + 2):
        _finite(arr, "box corners")
        lead = arr.shape[1] - 2
        key: Index | None = index
        if lead:
            keys = {_slice_of(row[:lead]) for row in arr}
            if len(keys) != 1:
                raise PromptError(f"the box corners lie on different slices {sorted(keys)}")
            key = keys.pop()
            if index is not None and key != index:
                raise PromptError(f"the box lies on slice {key} but index={index} was given")
        yx = arr[:, lead:]
        return key, np.concatenate([yx.min(axis=0), yx.max(axis=0)])
    raise PromptError(
        "a box is (min_row, min_col, max_row, max_col), or its corners as an (2 or 4, D) array "
        f"(a napari Shapes rectangle); got shape {arr.shape}"
    )


def parse_boxes(boxes: Any, n_index: int, index: Index | None) -> tuple[Index | None, np.ndarray]:
    """Several boxes -> (slice index or None, (B, 4)); each box as accepted by :func:`parse_box`.

    ``boxes`` is a (B, 4) array, a (B, k, D) array of corners, or a list of either form.
    All boxes must lie on one slice.
    """
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2 and boxes.shape[1] == 4:
        items: list[Any] = list(boxes)
    elif isinstance(boxes, np.ndarray) and boxes.ndim == 3:
        items = list(boxes)
    elif isinstance(boxes, (list, tuple)):
        items = list(boxes)
    else:
        arr = np.asarray(boxes)
        raise PromptError(f"boxes must be (B, 4) or a list of boxes, got shape {arr.shape}")
    key = index
    out = []
    for item in items:
        k, b = parse_box(item, n_index, key)
        key = k
        out.append(b)
    return key, np.asarray(out, dtype=np.float64).reshape(-1, 4)
