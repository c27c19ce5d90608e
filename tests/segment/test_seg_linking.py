"""Linking per-slice labels through z on hand-made stacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.segment import iou_table, link_slices, match_labels


def _disc(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_iou_table_by_hand() -> None:
    a = np.array([[1, 1, 0, 2]])
    b = np.array([[5, 0, 0, 2]])
    ids_a, ids_b, iou = iou_table(a, b)
    assert ids_a.tolist() == [1, 2] and ids_b.tolist() == [2, 5]
    assert iou.tolist() == [[0.0, 0.5], [1.0, 0.0]]


def test_objects_keep_ids_through_z_with_shuffled_slice_ids() -> None:
    """Three discs drifting through 6 slices; each slice numbers them differently."""
    shape = (40, 60)
    stack = np.zeros((6, *shape), dtype=np.uint16)
    rng = np.random.default_rng(0)
    for z in range(6):
        ids = rng.permutation([1, 2, 3]) * 7  # arbitrary, different per slice
        for obj, local in zip(range(3), ids):
            stack[z][_disc(shape, (10 + 10 * obj, 10 + 2 * z + 15 * obj), 4)] = local
    linked = link_slices(stack)
    for obj in range(3):
        ids = {int(linked[z][_disc(shape, (10 + 10 * obj, 10 + 2 * z + 15 * obj), 2)].max()) for z in range(6)}
        assert len(ids) == 1, f"object {obj} changed ID through z: {ids}"
    assert sorted(np.unique(linked).tolist()) == [0, 1, 2, 3]


def test_split_and_new_objects_get_new_ids() -> None:
    shape = (30, 30)
    stack = np.zeros((3, *shape), dtype=np.uint32)
    stack[0][_disc(shape, (15, 10), 5)] = 1
    stack[1][_disc(shape, (15, 10), 5)] = 4  # same object
    stack[1][_disc(shape, (15, 24), 4)] = 9  # appears on slice 1
    stack[2][_disc(shape, (15, 24), 4)] = 1  # continues; the first one ended
    linked = link_slices(stack)
    assert linked[0][15, 10] == linked[1][15, 10] == 1
    assert linked[1][15, 24] == linked[2][15, 24] == 2
    assert linked.dtype == np.uint32


def test_optimal_matching_beats_greedy() -> None:
    """Greedy matching (largest IoU first) would pair 10 with 1 and leave 20 without a partner."""
    prev = np.zeros((1, 20), dtype=np.int32)
    cur = np.zeros((1, 20), dtype=np.int32)
    prev[0, 0:10] = 1
    prev[0, 10:20] = 2
    cur[0, 4:15] = 10  # IoU with 1: 6/15 = 0.4, with 2: 5/16 = 0.31
    cur[0, 0:3] = 20  # IoU with 1: 3/10 = 0.3
    assert match_labels(prev, cur) == {10: 2, 20: 1}


def test_low_overlap_is_not_linked() -> None:
    prev = np.zeros((1, 20), dtype=np.int32)
    cur = np.zeros((1, 20), dtype=np.int32)
    prev[0, 0:10] = 1
    cur[0, 9:19] = 1  # IoU 1/19
    assert match_labels(prev, cur, min_iou=0.25) == {}
    with pytest.raises(ValueError, match="Z, Y, X"):
        link_slices(prev)
