"""Segment everything on scenes whose answer is known, with a decoder whose answer is known.

The model is the small random SAM with its ``decode`` replaced by an oracle: a point inside a
disc gets that disc (twice) and a junk mask with low predicted IoU; a point on the background
gets the background. Encoder, coordinate transforms, upscaling, filtering, NMS, crops, cleanup,
labelling and linking are the real code; only the network's answer is fixed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.model import build_sam
from napari_sam.segment import EverythingParams, Segmenter, generate_masks, paint_records
from napari_sam.segment._decoder import PROBE_POINTS
from napari_sam.segment._upscale import Upscaler
from napari_sam.predictor import Predictor

from seg_helpers import SMALL

Disc = tuple[float, float, float]  # (row, col, radius) in image pixels


def _discs_image(shape: tuple[int, int], discs: list[Disc]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint32)
    for i, (r, c, rad) in enumerate(discs, 1):
        labels[(yy - r) ** 2 + (xx - c) ** 2 <= rad * rad] = i
    return (labels > 0).astype(np.float32), labels


def _oracle_model(discs_per_slice: dict[int, list[Disc]], image_shape: tuple[int, int], calls: list[int]):  # noqa: ANN202
    """A small SAM whose decoder answers from the known discs (of the slice being decoded)."""
    torch.manual_seed(0)
    model = build_sam(SMALL).eval()
    model.precision = "fp32"
    s = model.img_size
    from napari_sam.preprocess import resized_shape

    hl = 4 * model.prompt_encoder.image_embedding_size[0]
    centres = (torch.arange(hl) + 0.5) * s / hl  # low-res pixel centres in the model frame
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    current = {"discs": next(iter(discs_per_slice.values())), "shape": image_shape}

    def decode(embedding, points=None, boxes=None, masks=None, multimask_output=True):  # noqa: ANN001, ANN202
        h, w = current["shape"]  # of the image (or crop) being decoded
        h_in, w_in = resized_shape(h, w, s)
        sy, sx = h_in / h, w_in / w
        coords = points[0][:, 0, :]  # (B, 2) x, y in the model frame
        calls.append(len(coords))
        out, iou = [], []
        for x, y in coords.tolist():
            inside = [(r, c, rad) for r, c, rad in current["discs"] if (y / sy - r) ** 2 + (x / sx - c) ** 2 <= rad**2]

            def disc(r: float, c: float, rad: float) -> torch.Tensor:  # image pixel i spans [i, i + 1)
                return (gy / sy - 0.5 - r) ** 2 + (gx / sx - 0.5 - c) ** 2 <= rad**2

            fg = torch.zeros_like(gx, dtype=torch.bool)
            for r, c, rad in current["discs"]:
                fg |= disc(r, c, rad)
            frame = (gy < h_in) & (gx < w_in)
            if inside:
                r, c, rad = inside[0]
                obj, junk = disc(r, c, rad), disc(r, c, 0.3 * rad)
                three, scores = [obj, obj, junk], [0.97, 0.95, 0.3]
            else:
                three, scores = [frame & ~fg] * 3, [0.96, 0.9, 0.9]
            out.append(torch.stack([torch.where(m, 100.0, -60.0) for m in three]))
            iou.append(torch.tensor(scores))
        logits, ious = torch.stack(out), torch.stack(iou)
        return (logits, ious) if multimask_output else (logits[:, :1], ious[:, :1])

    model.decode = decode  # type: ignore[method-assign]
    model._oracle_state = current  # type: ignore[attr-defined]
    model._oracle_discs = discs_per_slice  # type: ignore[attr-defined]
    return model


DISCS = [(20.0, 20.0, 9.0), (22.0, 60.0, 7.0), (52.0, 35.0, 10.0), (55.0, 72.0, 6.5)]  # radius >= grid step


def _generate(model, image: np.ndarray, **params) -> list:  # noqa: ANN001, ANN003
    p = Predictor(model)
    p.set_image(image)
    return generate_masks(lambda region: _crop_predictor(model, image, region, p), image.shape, EverythingParams(**params))


def _crop_predictor(model, image: np.ndarray, region, whole: Predictor) -> Predictor:  # noqa: ANN001
    if region == (0, 0, *image.shape):
        return whole
    # a crop: the oracle must answer in crop coordinates, so shift its discs
    r0, c0 = region[0], region[1]
    model._oracle_state["discs"] = [(r - r0, c - c0, rad) for r, c, rad in model._oracle_discs[0]]
    model._oracle_state["shape"] = (region[2] - region[0], region[3] - region[1])
    p = Predictor(model)
    p.set_image(image[region[0] : region[2], region[1] : region[3]])
    return p


@pytest.mark.parametrize("skip", [False, True])
def test_finds_every_disc_exactly(skip: bool) -> None:
    image, truth = _discs_image((80, 96), DISCS)
    calls: list[int] = []
    model = _oracle_model({0: DISCS}, image.shape, calls)
    records = _generate(model, image, points_per_side=16, skip_covered=skip)
    labels = paint_records(records, image.shape, max_area_fraction=0.5)
    assert labels.max() == len(DISCS)  # the background mask (> half the image) is dropped
    for i in range(1, len(DISCS) + 1):
        found = np.bincount(labels[truth == i]).argmax()
        iou = ((labels == found) & (truth == i)).sum() / ((labels == found) | (truth == i)).sum()
        assert iou > 0.85, f"disc {i}: IoU {iou:.2f}"  # the oracle draws on the 1.5 px low-res grid
    decoded = sum(calls) - PROBE_POINTS  # the fast decoder's one-off check calls the model too
    if skip:  # background and discs cover most of the grid after the coarse passes
        assert decoded < 256 / 3
    else:
        assert decoded == 256  # every grid point decoded once


def test_skip_covered_keeps_the_same_objects() -> None:
    image, _ = _discs_image((80, 96), DISCS)
    model = _oracle_model({0: DISCS}, image.shape, [])
    exact = paint_records(_generate(model, image, points_per_side=16, skip_covered=False), image.shape, max_area_fraction=0.5)
    fast = paint_records(_generate(model, image, points_per_side=16, skip_covered=True), image.shape, max_area_fraction=0.5)
    assert np.array_equal(exact > 0, fast > 0) and exact.max() == fast.max()


def test_crops_do_not_duplicate_objects() -> None:
    image, truth = _discs_image((80, 96), DISCS)
    model = _oracle_model({0: DISCS}, image.shape, [])
    records = _generate(model, image, points_per_side=8, crop_n_layers=1, crop_n_points_downscale_factor=1)
    labels = paint_records(records, image.shape, max_area_fraction=0.5)
    assert labels.max() == len(DISCS)
    assert {np.bincount(labels[truth == i]).argmax() for i in range(1, 5)} == {1, 2, 3, 4}


def test_upscaler_equals_the_model_upscale(small_model) -> None:  # noqa: ANN001
    p = Predictor(small_model)
    p.set_image(np.random.default_rng(0).random((70, 90)).astype(np.float32))
    hl = 4 * small_model.prompt_encoder.image_embedding_size[0]
    up = Upscaler(p, (hl, hl))
    assert up.exact
    low = torch.randn(5, hl, hl) * 5
    full = p.upscale(low[:, None])[:, 0]
    torch.testing.assert_close(up.full(low), full, atol=1e-4, rtol=1e-4)
    # a small object: the window holds every pixel above the floor, with the same values
    blob = torch.full((hl, hl), -8.0)
    blob[20:26, 30:34] = 6.0
    ref = p.upscale(blob[None, None])[0, 0]
    y0, x0, win = up.window(blob, -1.0)
    assert win.numel() < 0.1 * ref.numel()
    torch.testing.assert_close(win, ref[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]], atol=1e-4, rtol=1e-4)
    outside = ref.clone()
    outside[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = -100
    assert (outside <= -1.0).all()
    assert up.window(torch.full((hl, hl), -5.0), -1.0) is None


def test_stack_objects_keep_one_id_through_z() -> None:
    """Discs drifting through 5 slices: segment everything on the stack links them by overlap."""
    shape = (80, 96)
    per_slice = {z: [(r + 2 * z, c + z, rad) for r, c, rad in DISCS] for z in range(5)}
    stack = np.stack([_discs_image(shape, per_slice[z])[0] for z in range(5)])
    model = _oracle_model(per_slice, shape, [])
    seg = Segmenter(model, stack)
    original = seg.embeddings.predictor

    def predictor(index, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        model._oracle_state["discs"] = per_slice[index[0]]  # the oracle answers for this slice
        return original(index, *args, **kwargs)

    seg.embeddings.predictor = predictor  # type: ignore[method-assign]
    labels = seg.segment_everything(points_per_side=16, min_mask_region_area=0, max_area_fraction=0.5)
    assert labels.shape == (5, *shape)
    for i in range(len(DISCS)):
        ids = {int(labels[z][int(per_slice[z][i][0]), int(per_slice[z][i][1])]) for z in range(5)}
        assert len(ids) == 1 and 0 not in ids, f"disc {i} has IDs {ids} through z"
    assert len(np.unique(labels)) == len(DISCS) + 1


def test_point_decoder_equals_model_decode(small_model) -> None:  # noqa: ANN001
    from napari_sam.segment._decoder import PointDecoder

    p = Predictor(small_model)
    p.set_image(np.random.default_rng(3).random((60, 70)).astype(np.float32))
    dec = PointDecoder(small_model, p.embedding.features)
    assert dec.fast
    coords = torch.rand((9, 1, 2)) * small_model.img_size
    labels = torch.ones((9, 1), dtype=torch.int64)
    low, iou = dec(coords, labels)
    with torch.inference_mode():
        ref_low, ref_iou = small_model.decode(p.embedding.features, points=(coords, labels), multimask_output=True)
    torch.testing.assert_close(low, ref_low, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-4)


def test_best_mask_only_and_prompt_inside_filters() -> None:
    """The oracle's third mask of a disc point is a junk sub-disc (predicted IoU 0.3):
    best_mask_only keeps one mask per point, the best; require_prompt_inside keeps only masks
    that contain their own point."""
    image, truth = _discs_image((80, 96), DISCS)
    model = _oracle_model({0: DISCS}, image.shape, [])
    everything = _generate(model, image, points_per_side=16, pred_iou_thresh=0.0, box_nms_thresh=1.0)
    best = _generate(model, image, points_per_side=16, pred_iou_thresh=0.0, box_nms_thresh=1.0, best_mask_only=True)
    assert any(r.predicted_iou < 0.5 for r in everything)
    assert all(r.predicted_iou >= 0.95 for r in best)  # one mask per point, the best one
    inside = _generate(model, image, points_per_side=16, pred_iou_thresh=0.0, box_nms_thresh=1.0, require_prompt_inside=True)
    missed = [r for r in everything if not r.mask(image.shape)[int(r.point[0]), int(r.point[1])]]
    assert missed and len(inside) == len(everything) - len(missed)
    for r in inside:
        row, col = (int(v) for v in r.point)
        assert r.mask(image.shape)[row, col]


def test_model_recommended_settings_apply_where_the_caller_gives_none(small_model) -> None:  # noqa: ANN001
    from napari_sam.segment import everything_params

    assert everything_params(small_model).pred_iou_thresh == 0.88  # no recommendation: the paper's
    small_model.everything_defaults = {"pred_iou_thresh": 0.5, "best_mask_only": True}
    try:
        p = everything_params(small_model, stability_score_thresh=None, points_per_side=8)
        assert (p.pred_iou_thresh, p.best_mask_only, p.stability_score_thresh, p.points_per_side) == (0.5, True, 0.95, 8)
        assert everything_params(small_model, pred_iou_thresh=0.7).pred_iou_thresh == 0.7  # the caller wins
    finally:
        del small_model.everything_defaults


def test_load_model_attaches_tiny_synth_recommendations() -> None:
    from napari_sam._registry import EVERYTHING_DEFAULTS
    from napari_sam.weights import SHIPPED_DIR, load_model

    if not (SHIPPED_DIR / "tiny_synth.pt").is_file():
        pytest.skip("tiny-synth weights not shipped")
    by_path = load_model(SHIPPED_DIR / "tiny_synth.pt", device="cpu")
    assert by_path.name == "tiny-synth"  # the shipped file by its path is the same model
    assert by_path.everything_defaults == EVERYTHING_DEFAULTS["tiny-synth"]
    from napari_sam.weights import recommended_everything

    assert recommended_everything(None) == recommended_everything(SHIPPED_DIR / "tiny_synth.pt") == by_path.everything_defaults
    assert recommended_everything("vit_b") == {}
