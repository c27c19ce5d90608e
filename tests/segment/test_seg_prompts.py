"""Prompts in napari coordinates: grouping by slice, full stack coordinates, boxes from Shapes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.predictor import PromptError
from napari_sam.segment import group_by_slice, parse_box, parse_boxes, split_points
from napari_sam.segment._util import normalize_index


def test_group_by_slice_keeps_labels_with_their_points() -> None:
    pts = [[3, 10, 20], [5, 1, 2], [3.0, 11, 21], [4.9, 7, 8]]
    groups = group_by_slice(pts, [1, 0, 0, 1])
    assert list(groups) == [(3,), (5,)]
    p3, l3 = groups[(3,)]
    assert p3.tolist() == [[10, 20], [11, 21]] and l3.tolist() == [1, 0]
    p5, l5 = groups[(5,)]
    assert p5.tolist() == [[1, 2], [7, 8]] and l5.tolist() == [0, 1]


def test_group_by_slice_4d() -> None:
    groups = group_by_slice([[1, 2, 10, 10], [1, 3, 10, 10], [1, 2, 5, 5]])
    assert list(groups) == [(1, 2), (1, 3)]
    assert len(groups[(1, 2)][0]) == 2


def test_points_on_two_slices_error_lists_them() -> None:
    with pytest.raises(PromptError, match=r"\(3,\), \(5,\)"):
        split_points([[3, 10, 20], [5, 1, 2]], None, 1, None)


def test_split_points_2d_and_stack_coordinates() -> None:
    idx, pts, labels = split_points([[10, 20]], None, 1, (4,))
    assert idx == (4,) and pts.tolist() == [[10, 20]] and labels.tolist() == [1]
    idx, pts, _ = split_points([4, 10, 20], None, 1, None)  # one point as a flat row
    assert idx == (4,) and pts.tolist() == [[10, 20]]
    with pytest.raises(PromptError, match="index=\\(2,\\)"):
        split_points([[4, 10, 20]], None, 1, (2,))
    with pytest.raises(PromptError, match="point_labels"):
        split_points([[10, 20]], [1, 1], 1, (0,))
    with pytest.raises(PromptError, match="1 \\(positive\\) or 0"):
        split_points([[10, 20]], [2], 1, (0,))
    with pytest.raises(PromptError, match="NaN"):
        split_points([[np.nan, 20]], None, 1, (0,))


def test_parse_box_from_shapes_corners() -> None:
    corners = [[7, 10, 20], [7, 10, 50], [7, 40, 50], [7, 40, 20]]
    idx, box = parse_box(corners, 1, None)
    assert idx == (7,) and box.tolist() == [10, 20, 40, 50]
    idx, box = parse_box([40, 50, 10, 20], 1, (2,))  # 2D box, kept as given (predictor sorts)
    assert idx == (2,) and box.tolist() == [40, 50, 10, 20]
    with pytest.raises(PromptError, match="different slices"):
        parse_box([[1, 0, 0], [2, 5, 5]], 1, None)


def test_parse_boxes_list_and_array() -> None:
    idx, boxes = parse_boxes(np.array([[0, 0, 5, 5], [1, 1, 6, 6]]), 1, (0,))
    assert boxes.shape == (2, 4) and idx == (0,)
    idx, boxes = parse_boxes([[[3, 0, 0], [3, 5, 5]], [[3, 1, 1], [3, 6, 6]]], 1, None)
    assert idx == (3,) and boxes.tolist() == [[0, 0, 5, 5], [1, 1, 6, 6]]


def test_normalize_index() -> None:
    assert normalize_index(-1, (5,)) == (4,)
    assert normalize_index(None, ()) == ()
    assert normalize_index((1.0, 2), (3, 4)) == (1, 2)
    with pytest.raises(ValueError, match="leading axes"):
        normalize_index(None, (5,))
    with pytest.raises(ValueError, match="outside"):
        normalize_index((5,), (5,))
    with pytest.raises(ValueError, match="2 entries"):
        normalize_index((1, 2), (5,))
