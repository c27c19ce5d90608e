"""Following one object through a stack, slice by slice, from one or several annotated slices.

This module holds the control flow (directions, stop criteria, combining two annotations,
progress and cancel); how one slice is predicted from the previous one is a function passed in
(:class:`napari_sam.segment.Segmenter` passes one that prompts SAM), so the logic is testable with
a fake predictor.

Positions are integers along the propagation axis. Between two annotated slices ``a < b`` the
object is followed forward from ``a`` and backward from ``b`` without the stop criteria (the user
has said the object spans them) and the two predictions are blended per slice: their full-size
logits are averaged with weights falling linearly with the distance to each annotation (the
nearer annotation dominates, and where both agree the result is the same), then thresholded at 0.
Where only one side produced a mask (the other came back empty), that one is used. Outside the
outermost annotations the object is followed until a stop criterion fires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_sam.segment._util import Progress, SegmentationCancelled, is_cancelled, report

__all__ = ["PropagationReport", "SliceResult", "StopCriteria", "propagate_positions"]


@dataclass
class SliceResult:
    """The object on one slice.

    Attributes
    ----------
    mask : (Y, X) bool
    score : float
        Predicted IoU (1.0 for an annotation).
    state : Any
        Whatever the predict function wants to carry to the next slice (e.g. low-res logits).
    full_logits : callable returning (Y, X) float32 logits, or None
        Used to blend two predictions between annotations; None: blend the masks instead.
    """

    mask: np.ndarray
    score: float = 1.0
    state: Any = None
    full_logits: Callable[[], np.ndarray] | None = None


PredictFn = Callable[[int, SliceResult], SliceResult]


@dataclass(frozen=True)
class StopCriteria:
    """When following an object away from the annotations stops.

    Attributes
    ----------
    min_iou : float
        Stop when the predicted IoU of the next slice's mask is below this.
    max_area_change : float
        Stop when the area changes by more than this factor from one slice to the next
        (``area / previous > f`` or ``< 1 / f``). ``inf`` disables it.
    min_area : int
        Stop when the mask has fewer pixels than this (an empty mask always stops).
    """

    min_iou: float = 0.5
    max_area_change: float = 2.5
    min_area: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"stop_iou must be in [0, 1], got {self.min_iou}")
        if not self.max_area_change >= 1.0:
            raise ValueError(f"max_area_change must be >= 1 (a factor), got {self.max_area_change}")

    def check(self, result: SliceResult, previous: SliceResult) -> str | None:
        """The reason to stop at ``result`` ("empty", "iou", "area"), or None to go on."""
        area = int(result.mask.sum())
        if area < max(1, self.min_area):
            return "empty"
        if result.score < self.min_iou:
            return "iou"
        before = max(int(previous.mask.sum()), 1)
        if not 1.0 / self.max_area_change <= area / before <= self.max_area_change:
            return "area"
        return None


@dataclass
class PropagationReport:
    """What a propagation did: the positions filled and why each open end stopped.

    ``stopped`` maps "down" / "up" to "range" (reached the end of the range), "empty", "iou"
    or "area", or is missing a direction that had nothing to follow.
    """

    filled: list[int] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)


def _blend(fwd: SliceResult, bwd: SliceResult, w_fwd: float) -> np.ndarray:
    if fwd.full_logits is not None and bwd.full_logits is not None:
        mix = w_fwd * fwd.full_logits() + (1.0 - w_fwd) * bwd.full_logits()
        return np.asarray(mix > 0)
    return fwd.mask if w_fwd >= 0.5 else bwd.mask


def propagate_positions(
    predict: PredictFn,
    annotations: Mapping[int, SliceResult],
    shape: tuple[int, int, int],
    stop: StopCriteria,
    lo: int,
    hi: int,
    progress: Progress | None = None,
    cancel: Any = None,
) -> tuple[np.ndarray, PropagationReport]:
    """Follow one object through positions ``lo .. hi - 1`` from annotated positions.

    Parameters
    ----------
    predict : callable (position, previous SliceResult) -> SliceResult
        Predicts the object on ``position`` given its neighbour towards the annotation.
    annotations : {position: SliceResult}
        At least one, all inside ``[lo, hi)``; their masks are used as given.
    shape : (n, Y, X) of the output volume (n positions along the axis)
    stop : StopCriteria
        Applied outside the outermost annotations only.
    lo, hi : int
        The range, half-open.
    progress : callable (done, total), optional
        Called after each slice; total = the number of slices that may need predicting.
    cancel : cancel token, optional
        Checked before each slice; raises :class:`SegmentationCancelled` whose ``partial`` holds
        the volume so far.

    Returns
    -------
    volume : (n, Y, X) bool
    report : PropagationReport
    """
    keys = sorted(annotations)
    if not keys:
        raise ValueError("propagation needs at least one annotated slice")
    if keys[0] < lo or keys[-1] >= hi:
        raise ValueError(f"annotated slices {keys} must lie inside the range [{lo}, {hi})")
    volume = np.zeros(shape, dtype=bool)
    rep = PropagationReport()
    for k in keys:
        volume[k] = annotations[k].mask
        rep.scores[k] = float(annotations[k].score)
    total = (hi - lo) - len(keys)
    done = 0

    def step(pos: int, previous: SliceResult) -> SliceResult:
        nonlocal done
        if is_cancelled(cancel):
            raise SegmentationCancelled("propagation cancelled", volume)
        result = predict(pos, previous)
        done += 1
        report(progress, done, total)
        return result

    # Between consecutive annotations: both constrain the slices in between.
    for a, b in zip(keys[:-1], keys[1:]):
        forward: dict[int, SliceResult] = {}
        prev = annotations[a]
        for pos in range(a + 1, b):
            prev = step(pos, prev)
            forward[pos] = prev
            if not prev.mask.any():
                break
        prev = annotations[b]
        for pos in range(b - 1, a, -1):
            back = step(pos, prev) if prev.mask.any() else None
            fwd = forward.get(pos)
            w = (b - pos) / (b - a)  # weight of the forward (from a) prediction
            if back is not None and back.mask.any() and fwd is not None and fwd.mask.any():
                volume[pos] = _blend(fwd, back, w)
                rep.scores[pos] = w * fwd.score + (1 - w) * back.score
            elif back is not None and back.mask.any():
                volume[pos] = back.mask
                rep.scores[pos] = back.score
            elif fwd is not None and fwd.mask.any():
                volume[pos] = fwd.mask
                rep.scores[pos] = fwd.score
            if back is not None:
                prev = back
            if volume[pos].any():
                rep.filled.append(pos)

    # Outside: follow the object away from the outermost annotations until a criterion fires.
    for name, start, end, direction in (("down", keys[0], lo - 1, -1), ("up", keys[-1], hi, 1)):
        prev = annotations[start]
        reason = "range"
        for pos in range(start + direction, end, direction):
            result = step(pos, prev)
            why = stop.check(result, prev)
            if why is not None:
                reason = why
                done += abs(end - pos) - 1  # the rest of this direction needs no work
                report(progress, done, total)
                break
            volume[pos] = result.mask
            rep.scores[pos] = float(result.score)
            rep.filled.append(pos)
            prev = result
        rep.stopped[name] = reason
    report(progress, total, total)
    rep.filled.sort()
    return volume, rep
