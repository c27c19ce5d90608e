"""Building blocks of segment-everything: NMS, stability score, boxes, grids, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_sam.segment.amg import (
    box_iou,
    box_nms,
    crop_boxes,
    masks_to_boxes,
    near_crop_edge,
    point_grid,
    stability_score,
)


def _brute_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one pair at a time."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            a, b = boxes[i], boxes[j]
            ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = ih * iw
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    corner = rng.integers(0, 50, size=(n, 2))
    size = rng.integers(1, 30, size=(n, 2))
    return np.concatenate([corner, corner + size], axis=1).astype(np.float64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7])
def test_nms_matches_brute_force(seed: int, thr: float) -> None:
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 60)
    scores = rng.random(60).round(1)  # rounded: many ties, which keep input order
    kept = box_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
    assert kept == _brute_nms(boxes, scores, thr)


def test_nms_blocks_agree_with_one_block() -> None:
    """More boxes than one IoU block (1024): the blockwise loop gives the brute-force answer."""
    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 1100)
    scores = rng.random(1100)
    kept = box_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist()
    assert kept == _brute_nms(boxes, scores, 0.5)


def test_nms_keeps_identical_box_once_and_empty_input() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float64)
    assert box_nms(boxes, torch.tensor([0.5, 0.9, 0.1]), 0.7).tolist() == [1, 2]
    assert box_nms(torch.zeros((0, 4)), torch.zeros(0), 0.7).numel() == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 20)] * 4), min_size=1, max_size=8))
def test_box_iou_symmetric_and_bounded(raw: list[tuple[int, int, int, int]]) -> None:
    b = torch.tensor([[min(r0, r1), min(c0, c1), max(r0, r1), max(c0, c1)] for r0, c0, r1, c1 in raw])
    iou = box_iou(b, b)
    assert torch.allclose(iou, iou.T)
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()


def test_stability_score_by_hand() -> None:
    logits = torch.tensor([[[3.0, 0.5, -0.5], [-3.0, 2.0, 0.9]]])  # (1, 2, 3)
    # > +1: 3.0, 2.0 -> 2 pixels; > -1: 3.0, 0.5, -0.5, 2.0, 0.9 -> 5 pixels
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(2 / 5)
    assert stability_score(torch.full((1, 4, 4), -5.0)).item() == 0.0
    assert stability_score(torch.full((1, 4, 4), 5.0)).item() == 1.0


def test_masks_to_boxes_inclusive_and_empty() -> None:
    masks = torch.zeros((2, 10, 12), dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    boxes = masks_to_boxes(masks)
    assert boxes[0].tolist() == [2, 3, 4, 8]
    assert boxes[1].tolist() == [0, 0, 0, 0]


def test_point_grid_is_cell_centres_row_major() -> None:
    g = point_grid(2)
    assert g.tolist() == [[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]


def test_crop_boxes_cover_the_image_with_overlap() -> None:
    crops = crop_boxes((300, 200), 1)
    assert crops[0] == (0, (0, 0, 300, 200))
    layer1 = [c for layer, c in crops if layer == 1]
    assert len(layer1) == 4
    cover = np.zeros((300, 200), dtype=int)
    for r0, c0, r1, c1 in layer1:
        cover[r0:r1, c0:c1] += 1
    assert cover.min() >= 1 and cover.max() > 1  # everything covered, crops overlap


def test_near_crop_edge_ignores_image_edges() -> None:
    boxes = torch.tensor([[0, 0, 50, 50], [60, 60, 99, 99], [150, 150, 180, 180]])
    flags = near_crop_edge(boxes, (0, 0, 100, 100), (200, 200))
    # first touches only image edges; second touches the crop's inner edges; third is far away
    assert flags.tolist() == [False, True, False]
