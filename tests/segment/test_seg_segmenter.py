"""Segmenter bookkeeping with a small random SAM: coordinates, slices, tiles, logits, outputs.

The masks of a random model are arbitrary, so these tests compare the Segmenter with a plain
Predictor on the same plane (same embedding, same prompts) rather than with a ground truth.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam.embeddings import EmbeddingCache
from napari_sam.predictor import Predictor, PromptError
from napari_sam.segment import SegmentationCancelled, Segmenter


def _predictor_on(seg: Segmenter, index: tuple[int, ...]) -> Predictor:
    p = Predictor(seg.model)
    p.set_embedding(seg.embeddings.get(index))
    return p


def test_stack_coordinates_equal_2d_points_with_index(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    a = seg.segment(points=[[2, 20, 22]])
    b = seg.segment(points=[[20, 22]], index=(2,))
    c = seg.segment(points=[[20, 22]], index=2)
    assert a.shape == (64, 80) and a.dtype == bool
    assert np.array_equal(a, b) and np.array_equal(a, c)
    ref = _predictor_on(seg, (2,)).predict(points=[[20, 22]], multimask=True)
    assert np.array_equal(a, ref.masks[0])  # one point: the best of 3 by predicted IoU
    assert seg.last_scores[(2,)] == pytest.approx(float(ref.scores.max()))


def test_several_prompts_take_the_single_mask_output(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    pts, labels = [[1, 20, 22], [1, 40, 55]], [1, 0]
    mask = seg.segment(points=pts, point_labels=labels)
    ref = _predictor_on(seg, (1,)).predict(points=[[20, 22], [40, 55]], point_labels=labels, multimask=False)
    assert np.array_equal(mask, ref.masks[0])
    np.testing.assert_array_equal(seg.last_logits[(1,)], ref.logits[0])


def test_iterative_correction_uses_last_logits(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    seg.segment(points=[[0, 20, 22]])
    first = seg.last_logits[(0,)].copy()
    mask = seg.segment(points=[[0, 20, 22], [0, 30, 30]], point_labels=[1, 0], logits="last")
    ref = _predictor_on(seg, (0,)).predict(
        points=[[20, 22], [30, 30]], point_labels=[1, 0], mask_input=first, multimask=False
    )
    assert np.array_equal(mask, ref.masks[0])
    with pytest.raises(PromptError, match="no previous prediction"):
        seg.segment(points=[[3, 5, 5]], logits="last")


def test_prompt_errors_are_actionable(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    with pytest.raises(PromptError, match=r"\(0,\), \(3,\)"):
        seg.segment(points=[[0, 5, 5], [3, 5, 5]])
    with pytest.raises(ValueError, match="index="):
        seg.segment(points=[[5, 5]])
    with pytest.raises(PromptError, match="outside the image"):
        seg.segment(points=[[0, 500, 5]])
    with pytest.raises(PromptError, match="mask_input"):
        seg.segment(box=[0, 0, 10, 10], index=(0,), mask_input=np.zeros((3, 3), bool))
    with pytest.raises(PromptError, match="at least one prompt"):
        seg.segment(index=(0,))


def test_mask_input_refines_a_label(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    label = np.zeros((64, 80), bool)
    label[14:27, 14:27] = True
    mask = seg.segment(mask_input=label, index=(1,))
    ref = _predictor_on(seg, (1,)).predict(mask_input=label, multimask=False)
    assert np.array_equal(mask, ref.masks[0])


def test_segment_many_is_one_mask_per_box_and_boxes_union(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    boxes = np.array([[10, 10, 30, 32], [32, 44, 50, 66]])
    many = seg.segment_many(boxes, index=(2,))
    p = _predictor_on(seg, (2,))
    for box, mask in zip(boxes, many):
        ref = p.predict(box=box, multimask=False).masks[0]
        assert (mask ^ ref).sum() <= 0.01 * max(ref.sum(), 1)  # batched vs single decode: float noise
    shapes = [[[2, 10, 10], [2, 30, 32]], [[2, 32, 44], [2, 50, 66]]]  # Shapes corners (z, row, col)
    union = seg.segment(boxes=shapes)
    assert np.array_equal(union, many[0] | many[1])


def test_two_d_image_and_postprocessing(small_model) -> None:  # noqa: ANN001
    image = np.random.default_rng(1).random((50, 70)).astype(np.float32)
    seg = Segmenter(small_model, image)
    assert seg.index_shape == () and seg.plane_shape == (50, 70)
    raw = seg.segment(points=[[25, 35]])
    filled = seg.segment(points=[[25, 35]], fill_holes=True, min_island=20)
    assert filled.shape == raw.shape
    from scipy import ndimage as ndi

    parts, n = ndi.label(filled, structure=np.ones((3, 3)))
    sizes = np.bincount(parts.ravel())[1:]
    assert n <= 1 or sizes.min() >= 20  # small islands gone (the largest part always stays)
    assert not (ndi.binary_fill_holes(filled) & ~filled).any()


def test_tiled_plane_places_masks_at_the_tile(small_model) -> None:  # noqa: ANN001
    """A plane larger than the tiling threshold: prompts are routed to a tile and the mask is
    placed back at its offset."""
    rng = np.random.default_rng(2)
    plane = rng.random((300, 300)).astype(np.float32)
    view = EmbeddingCache(small_model).view(plane, tile_threshold=256, tile_size=160, halo=20)
    seg = Segmenter(small_model, view)
    mask = seg.segment(points=[[250, 260]])
    predictor, off = view.predictor((), points=[[250, 260]])
    assert off != (0, 0)
    ref = predictor.predict(points=[[250 - off[0], 260 - off[1]]], multimask=True).masks[0]
    expected = np.zeros((300, 300), bool)
    expected[off[0] : off[0] + ref.shape[0], off[1] : off[1] + ref.shape[1]] = ref
    assert np.array_equal(mask, expected)
    labels = seg.segment_everything(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, max_area_fraction=1.0)
    assert labels.shape == (300, 300)


def test_propagate_shapes_axes_and_errors(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    start = np.zeros((64, 80), bool)
    start[15:26, 15:26] = True
    vol = seg.propagate(start, index=(1,), stop_iou=0.0, max_area_change=1e9)
    assert vol.shape == (4, 64, 80) and np.array_equal(vol[1], start)
    assert seg.last_report is not None and 1 not in seg.last_report.filled
    with pytest.raises(ValueError, match="empty"):
        seg.propagate(np.zeros((64, 80), bool), index=(1,))
    with pytest.raises(ValueError, match="z_range"):
        seg.propagate(start, index=(1,), z_range=(2, 4))
    with pytest.raises(ValueError, match="2D image"):
        Segmenter(small_model, blobs_stack[0]).propagate(start, index=())

    four = np.stack([blobs_stack, blobs_stack[::-1]])  # (T=2, Z=4, Y, X)
    seg4 = Segmenter(small_model, four)
    along_z = seg4.propagate(start, index=(1, 2), stop_iou=0.0, max_area_change=1e9)
    along_t = seg4.propagate(start, index=(1, 2), axis=0, stop_iou=0.0, max_area_change=1e9)
    assert along_z.shape == (4, 64, 80) and along_t.shape == (2, 64, 80)
    assert np.array_equal(along_z[2], start) and np.array_equal(along_t[1], start)


def test_segment_everything_outputs_keep_mode_progress_cancel(small_model, blobs_stack) -> None:  # noqa: ANN001
    seg = Segmenter(small_model, blobs_stack)
    fast = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_area_fraction=1.0)
    one = seg.segment_everything(index=(1,), **fast)
    assert one.shape == (64, 80) and one.dtype == np.uint32 and one.max() >= 1
    calls: list[tuple[int, int]] = []
    every = seg.segment_everything(progress=lambda d, t: calls.append((d, t)), **fast)
    assert every.shape == (4, 64, 80)
    assert calls[-1][0] == calls[-1][1] == 4 * 16  # 16 grid points per slice
    user = np.zeros((4, 64, 80), np.uint32)
    user[:, :10, :10] = 7
    out = seg.segment_everything(out=user, **fast)
    assert out is user and np.all(user[:, :10, :10] == 7)
    assert set(np.unique(user)) - {0, 7} and min(set(np.unique(user)) - {0, 7}) > 7
    event = threading.Event()
    event.set()
    with pytest.raises(SegmentationCancelled):
        seg.segment_everything(cancel=event, **fast)
    assert Segmenter(small_model, np.stack([blobs_stack] * 2)).segment_everything(index=(0,), **fast).shape == (4, 64, 80)
