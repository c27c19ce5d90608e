"""Propagation control flow with an injected predict function (no model): stop criteria,
ranges, two annotations, progress and cancel. Model quality is tested in test_tiny_synth.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam.segment import SegmentationCancelled, SliceResult, StopCriteria, propagate_positions

SHAPE = (10, 20, 20)


def _square(size: int) -> np.ndarray:
    m = np.zeros(SHAPE[1:], dtype=bool)
    m[:size, :size] = True
    return m


def _fake(sizes: dict[int, int], scores: dict[int, float] | None = None):  # noqa: ANN202
    """A 'model' that returns a square of a given side on each slice, and records its calls."""
    calls: list[int] = []

    def predict(pos: int, prev: SliceResult) -> SliceResult:
        calls.append(pos)
        return SliceResult(_square(sizes.get(pos, 0)), (scores or {}).get(pos, 0.9))

    return predict, calls


def test_runs_both_ways_to_the_ends() -> None:
    predict, calls = _fake({z: 10 for z in range(10)})
    vol, rep = propagate_positions(predict, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(), 0, 10)
    assert vol.sum(axis=(1, 2)).tolist() == [100] * 10
    assert sorted(calls) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert rep.stopped == {"down": "range", "up": "range"}


def test_stops_on_empty_low_iou_and_area_jump() -> None:
    sizes = {z: 10 for z in range(10)}
    sizes[2] = 0  # empty below
    sizes[7] = 19  # 361 / 100 > 2.5: area jump above
    predict, calls = _fake(sizes)
    vol, rep = propagate_positions(predict, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(), 0, 10)
    assert np.flatnonzero(vol.any(axis=(1, 2))).tolist() == [3, 4, 5, 6]
    assert rep.stopped == {"down": "empty", "up": "area"}
    assert 1 not in calls and 8 not in calls  # nothing predicted past a stop

    predict, _ = _fake({z: 10 for z in range(10)}, scores={6: 0.3})
    vol, rep = propagate_positions(predict, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(min_iou=0.5), 0, 10)
    assert rep.stopped["up"] == "iou" and not vol[6:].any() and vol[5].any()


def test_range_limits_the_walk() -> None:
    predict, calls = _fake({z: 10 for z in range(10)})
    vol, rep = propagate_positions(predict, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(), 3, 6)
    assert np.flatnonzero(vol.any(axis=(1, 2))).tolist() == [3, 4, 5]
    assert sorted(calls) == [3, 5]
    with pytest.raises(ValueError, match="inside the range"):
        propagate_positions(predict, {8: SliceResult(_square(3))}, SHAPE, StopCriteria(), 3, 6)


def test_between_two_annotations_the_nearer_one_dominates_and_criteria_do_not_stop() -> None:
    """Slices 2..6 between annotations on 1 and 7; each side 'predicts' its own annotation's
    square. Without logits the blend takes the nearer annotation's mask; a low predicted IoU
    between annotations does not stop anything."""

    def predict(pos: int, prev: SliceResult) -> SliceResult:
        return SliceResult(prev.mask.copy(), 0.1)  # copies its neighbour: the annotation's square

    ann = {1: SliceResult(_square(4)), 7: SliceResult(_square(8))}
    vol, rep = propagate_positions(predict, ann, SHAPE, StopCriteria(min_iou=0.5), 1, 8)
    areas = vol.sum(axis=(1, 2)).tolist()
    assert areas[1:8] == [16, 16, 16, 16, 64, 64, 64]  # 2,3 from slice 1; 5,6 from 7; 4 tie -> first
    assert rep.filled == [2, 3, 4, 5, 6]


def test_between_annotations_logits_are_blended_by_distance() -> None:
    ramp = np.tile(np.linspace(-1, 1, 20, dtype=np.float32), (20, 1))  # rises along columns

    def predict(pos: int, prev: SliceResult) -> SliceResult:
        sign = 1.0 if prev.state == "a" or (prev.state is None and prev.mask[0, 0]) else -1.0
        logits = sign * ramp + 0.5  # side a: object on the right; side b: object on the left
        return SliceResult(logits > 0, 0.9, "a" if sign > 0 else "b", lambda: logits)

    a = SliceResult(np.ones(SHAPE[1:], dtype=bool))
    b = SliceResult(np.zeros(SHAPE[1:], dtype=bool) | (np.arange(20) >= 15)[None, :])
    vol, _ = propagate_positions(predict, {0: a, 4: b}, (5, 20, 20), StopCriteria(), 0, 5)
    # weight of a at slice k = (4 - k) / 4: logits = (2w - 1) * ramp + 0.5
    for k in (1, 2, 3):
        w = (4 - k) / 4
        expected = ((2 * w - 1) * ramp + 0.5) > 0
        assert np.array_equal(vol[k], expected)


def test_progress_reaches_total_and_cancel_keeps_partial() -> None:
    seen: list[tuple[int, int]] = []
    predict, _ = _fake({z: 10 for z in range(10)}, scores={7: 0.1})
    propagate_positions(
        predict, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(), 0, 10, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (9, 9) and all(t == 9 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    event = threading.Event()

    def predict_then_cancel(pos: int, prev: SliceResult) -> SliceResult:
        event.set()  # cancel after the first slice
        return SliceResult(_square(10), 0.9)

    with pytest.raises(SegmentationCancelled) as info:
        propagate_positions(predict_then_cancel, {4: SliceResult(_square(10))}, SHAPE, StopCriteria(), 0, 10, cancel=event)
    assert info.value.partial is not None and info.value.partial[4].any()


def test_stop_criteria_validate() -> None:
    with pytest.raises(ValueError, match="stop_iou"):
        StopCriteria(min_iou=1.5)
    with pytest.raises(ValueError, match="factor"):
        StopCriteria(max_area_change=0.5)
