"""Operations on one 2D boolean mask: clean-up, bounding box, prompts derived from a mask.

Masks are (Y, X) bool arrays; boxes are (min_row, min_col, max_row, max_col) with inclusive pixel
indices; points are (row, col).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "bounding_box",
    "enlarge_box",
    "fill_holes",
    "interior_points",
    "remove_small_islands",
    "remove_small_regions",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2D (Y, X) mask, got shape {m.shape}")
    return m.astype(bool, copy=False)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(Y, X) bool with every enclosed background region filled."""
    return ndi.binary_fill_holes(_check_mask(mask))  # type: ignore[no-any-return]


def remove_small_islands(mask: np.ndarray, min_size: int) -> np.ndarray:
    """(Y, X) bool without the 8-connected components smaller than ``min_size`` pixels.

    If every component is smaller, the largest one is kept (a click never returns nothing just
    because the object is small).
    """
    m = _check_mask(mask)
    if min_size <= 1 or not m.any():
        return m.copy()
    out, _ = remove_small_regions(m, min_size, mode="islands")
    return out


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str = "islands") -> tuple[np.ndarray, bool]:
    """Remove islands (``mode="islands"``) or fill holes (``mode="holes"``) under ``min_area``.

    Connectivity is 8 for both the mask and the background. In islands mode the largest
    component is kept if all are small. Returns ``(mask, changed)``.
    """
    if mode not in ("islands", "holes"):
        raise ValueError(f"mode must be 'islands' or 'holes', got {mode!r}")
    m = _check_mask(mask)
    holes = mode == "holes"
    work = ~m if holes else m
    regions, n = ndi.label(work, structure=_EIGHT)
    if n == 0:
        return m.copy(), False
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return m.copy(), False
    if holes:
        fill = np.concatenate([[False], small])
        return m | fill[regions], True
    keep = np.concatenate([[False], ~small])
    if not keep.any():
        keep[int(np.argmax(sizes)) + 1] = True
    return keep[regions], True


def bounding_box(mask: np.ndarray) -> np.ndarray | None:
    """(4,) (min_row, min_col, max_row, max_col), inclusive, of the True pixels; None if empty."""
    m = _check_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)


def enlarge_box(
    box: np.ndarray, shape: tuple[int, int], fraction: float = 0.1, min_pad: float = 2.0
) -> np.ndarray:
    """``box`` grown on each side by ``max(min_pad, fraction * side)`` and clipped to ``shape``."""
    b = np.asarray(box, dtype=np.float64)
    pad_r = max(min_pad, fraction * (b[2] - b[0] + 1))
    pad_c = max(min_pad, fraction * (b[3] - b[1] + 1))
    return np.array(
        [
            max(0.0, b[0] - pad_r),
            max(0.0, b[1] - pad_c),
            min(shape[0] - 1.0, b[2] + pad_r),
            min(shape[1] - 1.0, b[3] + pad_c),
        ]
    )


def interior_points(mask: np.ndarray, n: int = 1) -> np.ndarray:
    """Up to ``n`` points (row, col) deep inside ``mask``, (k, 2) float, k <= n.

    The first is the maximum of the distance transform (the centre of the largest inscribed
    disc); each further one is the deepest pixel outside the discs already chosen, so the points
    spread over elongated or several-part objects. Empty mask: (0, 2).
    """
    m = _check_mask(mask)
    box = bounding_box(m)
    if box is None or n < 1:
        return np.zeros((0, 2))
    r0, c0, r1, c1 = (int(v) for v in box)
    crop = np.pad(m[r0 : r1 + 1, c0 : c1 + 1], 1)  # pad: the image border counts as outside
    dist = ndi.distance_transform_edt(crop)
    rows, cols = np.indices(dist.shape)
    points = []
    for _ in range(n):
        flat = int(np.argmax(dist))
        depth = dist.flat[flat]
        if depth <= 0:
            break
        r, c = divmod(flat, dist.shape[1])
        points.append((r - 1 + r0, c - 1 + c0))
        dist[(rows - r) ** 2 + (cols - c) ** 2 <= depth**2] = 0
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)
