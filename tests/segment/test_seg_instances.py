"""Automatic masks -> instance labels, and writing them into a user's labels without clobbering."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_sam.labels import LabelScheme, LabelSpaceFullError
from napari_sam.segment import MaskRecord, paint_records, write_instances


def _record(shape: tuple[int, int], r0: int, c0: int, r1: int, c1: int) -> MaskRecord:
    patch = np.ones((r1 - r0 + 1, c1 - c0 + 1), dtype=bool)
    return MaskRecord(np.array([r0, c0, r1, c1]), patch, 0.9, 0.95, np.array([r0, c0]), (0, 0, *shape))


def test_smaller_object_wins_overlap_and_big_ones_are_dropped() -> None:
    shape = (40, 40)
    big = _record(shape, 0, 0, 19, 19)  # 400 px
    small = _record(shape, 5, 5, 9, 9)  # 25 px, inside big
    background = _record(shape, 0, 0, 39, 39)  # the whole field
    labels = paint_records([big, background, small], shape, min_area=1, max_area_fraction=0.5)
    assert labels[7, 7] != 0 and labels[7, 7] != labels[15, 15] != 0
    assert labels[30, 30] == 0  # the whole-field mask was dropped
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]  # consecutive IDs
    assert (labels == labels[15, 15]).sum() == 400 - 25


def test_objects_left_too_small_are_dropped() -> None:
    shape = (20, 20)
    a = _record(shape, 0, 0, 4, 4)  # 25 px
    b = _record(shape, 0, 0, 4, 5)  # 30 px, only 5 visible after a
    labels = paint_records([a, b], shape, min_area=10)
    assert np.unique(labels).tolist() == [0, 1]


@settings(max_examples=40, deadline=None)
@given(
    existing=arrays(np.uint16, (12, 12), elements=st.sampled_from([0, 0, 0, 3, 1005])),
    new=arrays(np.uint8, (12, 12), elements=st.integers(0, 4)),
    mode=st.sampled_from(["keep", "same_class"]),
)
def test_keep_mode_never_changes_a_labelled_pixel(existing: np.ndarray, new: np.ndarray, mode: str) -> None:
    scheme = LabelScheme(divisor=1000, classes={1: "nucleus", 2: "cell"})
    target = existing.copy()
    written = write_instances(target, new, scheme, class_id=2, mode=mode)
    if mode == "keep":
        assert np.array_equal(target[existing > 0], existing[existing > 0])
    else:  # same_class: only class-1 pixels (1005 is class 1) and background are safe / free
        other = existing == 3  # plain 3 = class 0 -> another class: untouched
        assert np.array_equal(target[other], existing[other])
    # every new object got its own ID of class 2, above those in use
    for obj, label in written.items():
        assert label // 1000 == 2
        assert np.all(target[(new == obj) & (existing == 0)] == label)


def test_write_instances_starts_after_existing_ids_reuses_gaps_and_reports_full() -> None:
    scheme = LabelScheme(divisor=10, classes={1: "a", 2: "b"})
    target = np.zeros((4, 4), dtype=np.uint32)
    target[0, 0] = 17  # class 1 instance 7
    target[0, 1] = 23  # class 2 instance 3: not in the way of class 1
    labels = np.zeros((4, 4), dtype=np.uint32)
    labels[2, 2] = 1
    labels[3, 3] = 2
    assert write_instances(target, labels, scheme, class_id=1) == {1: 18, 2: 19}
    # 17, 18, 19 in use and 9 is the last ID: the smallest free ones, never one in use
    labels[1, 1] = 3
    assert write_instances(target, labels, scheme, class_id=1) == {1: 11, 2: 12, 3: 13}
    full = np.zeros((3, 3), dtype=np.uint32)
    full.flat[:8] = np.arange(11, 19)  # class 1 instances 1..8 in use: only 9 is free
    two = np.zeros((3, 3), dtype=np.uint32)
    two[2, 2] = 1
    assert write_instances(full.copy(), two, scheme, class_id=1) == {1: 19}
    two[2, 1] = 2
    with pytest.raises(LabelSpaceFullError, match="larger divisor"):
        write_instances(full, two, scheme, class_id=1)


def test_masks_mostly_hidden_by_smaller_ones_are_dropped_on_request() -> None:
    shape = (20, 20)
    a = _record(shape, 0, 0, 4, 4)  # 25 px
    b = _record(shape, 0, 0, 5, 5)  # 36 px, 11 visible (31 %) after a: a duplicate of a
    c = _record(shape, 10, 10, 14, 14)
    assert paint_records([a, b, c], shape).max() == 3  # default: everything visible is kept
    labels = paint_records([a, b, c], shape, min_visible_fraction=0.6)
    assert labels.max() == 2 and labels[5, 5] == 0 and labels[12, 12] != 0
