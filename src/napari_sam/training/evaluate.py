"""The interactive segmentation protocol used to compare models (``napari-sam eval``).

For every ground-truth object of every 2D image:

- click 1 is a positive click at the object's interior point farthest from its boundary
  (maximum of the distance transform);
- each next click goes to the centre (distance-transform maximum) of the largest error
  region of the current prediction, positive on a false negative, negative on a false
  positive; SAM gets all clicks so far plus its previous low-res logits;
- a separate trial prompts with the object's tight box;

and the IoU with the ground truth is recorded after each click and for the box. Results are
mean IoU over objects (mIoU) after 1, 3 and 5 clicks and for boxes. For 3D stacks, each
object is clicked once on its largest slice and followed through z with
:meth:`napari_sam.Segmenter.propagate`; the Dice of the volume is reported.

Any method with the :class:`InteractiveMethod` interface runs under the same protocol: SAM
(:class:`SamMethod`) and the classical baseline (:mod:`napari_sam.training.baseline`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from napari_sam._download import _is_cancelled
from napari_sam.model import Sam
from napari_sam.training.prompts import box_of, interior_point, largest_error_click

__all__ = [
    "EvalResult",
    "EvaluationCancelled",
    "InteractiveMethod",
    "SamMethod",
    "evaluate",
    "format_table",
    "iou",
]

REPORTED_CLICKS = (1, 3, 5)


class EvaluationCancelled(RuntimeError):
    """The cancel token stopped :func:`evaluate`."""


class InteractiveMethod(Protocol):
    """What the protocol needs from a segmentation method (SAM or a classical baseline)."""

    name: str

    def set_image(self, image: np.ndarray) -> None:
        """Prepare for a new 2D image (Y, X) or (Y, X, C)."""

    def click(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """All clicks so far on the current object, (N, 2) (row, col) and (N,) 1/0 -> (Y, X) bool.
        N = 1 starts a new object."""

    def box(self, box: np.ndarray) -> np.ndarray:
        """(4,) (min_row, min_col, max_row, max_col) -> (Y, X) bool."""


class SamMethod:
    """SAM under the protocol: first click with multimask output (best by predicted IoU), later
    clicks with a single output and the previous low-res logits as the mask prompt."""

    def __init__(self, model: Sam, name: str | None = None) -> None:
        from napari_sam.predictor import Predictor

        self.model = model
        self.name = name or getattr(model, "name", "sam")
        self.predictor = Predictor(model)
        self._logits: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def click(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        first = len(points) == 1
        pred = self.predictor.predict(
            points=points, point_labels=labels, mask_input=None if first else self._logits,
            multimask=first,
        )
        self._logits = pred.logits[0]
        return pred.masks[0]

    def box(self, box: np.ndarray) -> np.ndarray:
        return self.predictor.predict(box=box, multimask=False).masks[0]


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 if both are empty)."""
    union = np.logical_or(pred, target).sum()
    return float(np.logical_and(pred, target).sum() / union) if union else 1.0


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 if both are empty)."""
    total = pred.sum() + target.sum()
    return float(2 * np.logical_and(pred, target).sum() / total) if total else 1.0


@dataclass
class EvalResult:
    """Scores of one method under the protocol.

    Attributes
    ----------
    name : method name
    n_images, n_objects : 2D images and objects evaluated
    click_ious : (n_objects, max_clicks) IoU after each click
    box_ious : (n_objects,) IoU of the box prompt (empty if boxes were skipped)
    dice_3d : (n_objects_3d,) Dice of propagated volumes (empty if no stacks or skipped)
    notes : why a part was skipped, if one was
    """

    name: str
    n_images: int
    n_objects: int
    click_ious: np.ndarray
    box_ious: np.ndarray
    dice_3d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    notes: list[str] = field(default_factory=list)

    def miou(self, clicks: int) -> float:
        """Mean IoU after ``clicks`` clicks (NaN if fewer clicks were run or no objects)."""
        if self.click_ious.size == 0 or clicks > self.click_ious.shape[1]:
            return float("nan")
        return float(self.click_ious[:, clicks - 1].mean())

    @property
    def box_miou(self) -> float:
        return float(self.box_ious.mean()) if self.box_ious.size else float("nan")

    @property
    def dice_3d_mean(self) -> float:
        return float(self.dice_3d.mean()) if self.dice_3d.size else float("nan")

    def summary(self) -> dict[str, float]:
        """``{"1_click": .., "3_clicks": .., "5_clicks": .., "box": .., "dice_3d": ..}``."""
        out = {f"{k}_click{'s' if k > 1 else ''}": self.miou(k) for k in REPORTED_CLICKS}
        out["box"] = self.box_miou
        out["dice_3d"] = self.dice_3d_mean
        return out

    def table(self) -> str:
        """A Markdown table of this result."""
        return format_table([self])


def format_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table with one row per method: mIoU after 1/3/5 clicks, box mIoU, 3D Dice."""
    head = "| method | images | objects | 1 click | 3 clicks | 5 clicks | box | 3D Dice |"
    rows = [head, "|" + "---|" * 8]

    def fmt(x: float) -> str:
        return "n/a" if np.isnan(x) else f"{x:.3f}"

    for r in results:
        s = r.summary()
        rows.append(
            f"| {r.name} | {r.n_images} | {r.n_objects} | {fmt(s['1_click'])} | {fmt(s['3_clicks'])} | "
            f"{fmt(s['5_clicks'])} | {fmt(s['box'])} | {fmt(s['dice_3d'])} |"
        )
    return "\n".join(rows)


def _click_trial(method: InteractiveMethod, target: np.ndarray, max_clicks: int) -> list[float]:
    points = [interior_point(target)]
    labels = [1]
    scores: list[float] = []
    for _ in range(max_clicks):
        pred = np.asarray(method.click(np.asarray(points, float), np.asarray(labels)), dtype=bool)
        scores.append(iou(pred, target))
        nxt = largest_error_click(pred, target)
        if nxt is None:  # perfect: later clicks keep the score
            scores.extend([scores[-1]] * (max_clicks - len(scores)))
            break
        points.append(nxt.point)
        labels.append(nxt.label)
    return scores


def _objects(labels: np.ndarray, min_area: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[(ids > 0) & (counts >= min_area)]
    if limit is not None and keep.size > limit:
        keep = np.sort(rng.choice(keep, size=limit, replace=False))
    return keep


def _resolve(model: Sam | str | os.PathLike[str] | InteractiveMethod) -> InteractiveMethod:
    if isinstance(model, Sam):
        return SamMethod(model)
    if isinstance(model, (str, os.PathLike)):
        from napari_sam.weights import load_model

        return SamMethod(load_model(model))
    return model


def _propagation_dice(
    model: Sam, stack: np.ndarray, labels: np.ndarray, ids: np.ndarray
) -> list[float]:
    from napari_sam.segment import Segmenter

    seg = Segmenter(model, stack)
    scores = []
    for obj in ids:
        target = labels == obj
        z = int(np.argmax(target.sum(axis=(1, 2))))
        point = interior_point(target[z])
        mask = seg.segment(points=[point], point_labels=[1], index=(z,))
        scores.append(dice(seg.propagate(mask, index=(z,)), target))
    return scores


def evaluate(
    model: Sam | str | os.PathLike[str] | InteractiveMethod,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    max_clicks: int = 5,
    boxes: bool = True,
    propagation: bool = True,
    min_area: int = 20,
    max_objects: int | None = None,
    max_objects_3d: int = 5,
    seed: int = 0,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> EvalResult:
    """Run the interactive protocol on (image, labels) pairs.

    Parameters
    ----------
    model : Sam, registry name, checkpoint path, or an :class:`InteractiveMethod`
        (e.g. :class:`napari_sam.training.baseline.SeededWatershed`).
    data : sequence of (image, labels)
        2D: image (Y, X) or (Y, X, C), labels (Y, X) instance IDs. 3D: image and labels
        (Z, Y, X); stacks are used for the propagation Dice only.
    max_clicks : clicks per object (at least 5 to report the 5-click mIoU).
    boxes : also run the box trial.
    propagation : run the 3D propagation trial on stacks (SAM models only; skipped with a note
        when the method is not SAM or :mod:`napari_sam.segment` is unavailable).
    min_area : objects smaller than this (pixels / voxels) are skipped.
    max_objects : at most this many objects per 2D image (drawn with ``seed``); None: all.
    max_objects_3d : objects per stack for the propagation trial.
    name : row name in tables; default the model's name.
    progress : ``progress(done_images, total_images)``.
    cancel : cancel token; raises :class:`EvaluationCancelled`.

    Returns
    -------
    EvalResult
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    method = _resolve(model)
    rng = np.random.default_rng(seed)
    clicks: list[list[float]] = []
    box_scores: list[float] = []
    dice_scores: list[float] = []
    notes: list[str] = []
    n_images = 0
    for done, (image, labels) in enumerate(data, start=1):
        if _is_cancelled(cancel):
            raise EvaluationCancelled("evaluation cancelled")
        image, labels = np.asarray(image), np.asarray(labels)
        if labels.ndim == 3:
            if not propagation:
                continue
            if not isinstance(method, SamMethod):
                notes.append(f"3D propagation skipped for {method.name}: not a SAM model")
                propagation = False
                continue
            try:
                ids = _objects(labels, min_area, max_objects_3d, rng)
                dice_scores.extend(_propagation_dice(method.model, image, labels, ids))
            except ImportError as exc:
                notes.append(f"3D propagation skipped: napari_sam.segment unavailable ({exc})")
                propagation = False
            continue
        if labels.ndim != 2:
            raise ValueError(f"labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}")
        method.set_image(image)
        n_images += 1
        for obj in _objects(labels, min_area, max_objects, rng):
            target = labels == obj
            clicks.append(_click_trial(method, target, max_clicks))
            if boxes:
                box_scores.append(iou(np.asarray(method.box(box_of(target)), dtype=bool), target))
        if progress is not None:
            progress(done, len(data))
    return EvalResult(
        name=name or method.name,
        n_images=n_images,
        n_objects=len(clicks),
        click_ious=np.asarray(clicks, dtype=np.float64).reshape(len(clicks), max_clicks),
        box_ious=np.asarray(box_scores, dtype=np.float64),
        dice_3d=np.asarray(dice_scores, dtype=np.float64),
        notes=sorted(set(notes)),
    )
