"""Mask clean-up and prompts derived from a mask."""

from __future__ import annotations

import numpy as np

from napari_sam.segment import (
    bounding_box,
    enlarge_box,
    fill_holes,
    interior_points,
    remove_small_islands,
    remove_small_regions,
)


def test_fill_holes_and_islands() -> None:
    m = np.zeros((20, 20), dtype=bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False  # a hole
    m[15, 15] = True  # an island of one pixel
    assert fill_holes(m)[5, 5] and fill_holes(m)[15, 15]
    cleaned = remove_small_islands(m, 5)
    assert not cleaned[15, 15] and cleaned[3, 3] and not cleaned[5, 5]


def test_islands_keep_largest_when_all_small() -> None:
    m = np.zeros((10, 10), dtype=bool)
    m[0, 0] = True
    m[5:7, 5:7] = True
    out = remove_small_islands(m, 50)
    assert out.sum() == 4 and out[5, 5]


def test_remove_small_regions_holes_mode_reports_change() -> None:
    m = np.ones((10, 10), dtype=bool)
    m[4, 4] = False
    out, changed = remove_small_regions(m, 3, mode="holes")
    assert changed and out.all()
    out, changed = remove_small_regions(out, 3, mode="holes")
    assert not changed


def test_bounding_box_and_enlarge() -> None:
    m = np.zeros((50, 60), dtype=bool)
    m[10:21, 30:41] = True
    box = bounding_box(m)
    assert box is not None and box.tolist() == [10, 30, 20, 40]
    assert bounding_box(np.zeros((3, 3), bool)) is None
    big = enlarge_box(box, (50, 60), fraction=0.1, min_pad=2)
    assert big.tolist() == [8, 28, 22, 42]
    assert enlarge_box(np.array([0, 0, 49, 59]), (50, 60)).tolist() == [0, 0, 49, 59]


def test_interior_points_lie_deep_inside_each_part() -> None:
    m = np.zeros((40, 80), dtype=bool)
    m[10:30, 5:25] = True  # square part
    m[15:25, 40:75] = True  # elongated part
    pts = interior_points(m, 2)
    assert pts.shape == (2, 2)
    assert pts[0].tolist() in ([19, 14], [19, 15], [20, 14], [20, 15])  # the square's centre
    r, c = pts[1].astype(int)
    assert m[r, c] and 40 <= c < 75  # the second point is in the other part
    assert interior_points(np.zeros((5, 5), bool)).shape == (0, 2)
