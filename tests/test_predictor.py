"""The 2D Predictor: input validation, coordinate conventions and output contract (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.model import SamConfig, build_sam
from napari_sam.predictor import Predictor, PromptError
from napari_sam.preprocess import ImageError, IntensityNorm

SMALL = SamConfig(
    img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
    prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64,
)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    p = Predictor(build_sam(SMALL))
    p.set_image(np.random.default_rng(0).integers(0, 4000, (200, 300)).astype(np.uint16))
    return p


def test_output_contract(predictor: Predictor) -> None:
    pred = predictor.predict(points=[[50, 60]], point_labels=[1])
    assert pred.masks.shape == (3, 200, 300) and pred.masks.dtype == bool
    assert pred.scores.shape == (3,)
    assert np.all(np.diff(pred.scores) <= 0)  # best first
    assert pred.logits.shape == (3, 64, 64)
    single = predictor.predict(points=[[50, 60]], multimask=False)
    assert single.masks.shape == (1, 200, 300)


def test_logits_feed_back_as_mask_input(predictor: Predictor) -> None:
    first = predictor.predict(points=[[50, 60]])
    again = predictor.predict(points=[[50, 60], [120, 200]], point_labels=[1, 0],
                              mask_input=first.logits, multimask=False)
    assert again.masks.shape == (1, 200, 300)
    from_mask = predictor.predict(mask_input=first.masks[0], multimask=False)
    assert from_mask.masks.shape == (1, 200, 300)


def test_points_are_row_col(predictor: Predictor) -> None:
    # the 200 x 300 image is resized to 171 x 256 (longest side 256, rounded as the official code);
    # (row, col) = (10, 250) becomes (x, y) = (250 * 256/300, 10 * 171/200)
    sx, sy = 256 / 300, 171 / 200
    xy = predictor.points_to_model([[10, 250]]).numpy()
    np.testing.assert_allclose(xy, [[250 * sx, 10 * sy]], rtol=1e-5)
    box = predictor.boxes_to_model([[20, 30, 40, 50]]).numpy()
    np.testing.assert_allclose(box, [[30 * sx, 20 * sy, 50 * sx, 40 * sy]], rtol=1e-5)


def test_box_corners_in_any_order_and_clipped(predictor: Predictor) -> None:
    a = predictor.boxes_to_model([[40, 50, 20, 30]]).numpy()
    b = predictor.boxes_to_model([[20, 30, 40, 50]]).numpy()
    np.testing.assert_allclose(a, b)
    clipped = predictor.boxes_to_model([[-10, -10, 50, 400]]).numpy()
    assert clipped[0, 0] == 0 and clipped[0, 2] == pytest.approx(299 * 256 / 300)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(points=[[250, 10]]), "outside the image"),
        (dict(points=[[-3, 10]]), "outside the image"),
        (dict(points=[[10, 20, 30]]), "(N, 2)"),
        (dict(points=[[np.nan, 10]]), "NaN"),
        (dict(points=[[10, 10]], point_labels=[1, 0]), "1 points but 2"),
        (dict(points=[[10, 10]], point_labels=[2]), "1 (positive) or 0"),
        (dict(box=[300, 400, 350, 500]), "entirely outside"),
        (dict(box=[1, 2, 3]), "4 numbers"),
        (dict(), "at least one prompt"),
        (dict(mask_input=np.zeros((10, 10), bool)), "image's shape"),
        (dict(mask_input=np.zeros((10, 10), np.float32)), "previous Prediction.logits"),
    ],
)
def test_bad_prompts_are_clear_errors(predictor: Predictor, kwargs: dict, message: str) -> None:
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predictor.predict(**kwargs)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 5, 6)), "C = 1 or 3"),
        (np.zeros((2, 3, 4, 5)), "expected a 2D image"),
        (np.zeros((10, 10), complex), "unsupported image dtype"),
        (np.full((10, 10), np.nan), "no finite values"),
        (np.zeros((1, 10)), "too small"),
    ],
)
def test_bad_images_are_clear_errors(image: np.ndarray, message: str) -> None:
    p = Predictor(build_sam(SMALL))
    with pytest.raises(ImageError, match=message):
        p.set_image(image)


def test_predict_before_set_image_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="set_image"):
        Predictor(build_sam(SMALL)).predict(points=[[1, 1]])


def test_normalisation_rules() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 20, 3)).astype(np.uint8)
    assert IntensityNorm.from_data(rgb).passthrough  # uint8 RGB goes to the network unchanged
    gray = np.random.default_rng(0).integers(0, 255, (20, 20)).astype(np.uint8)
    assert not IntensityNorm.from_data(gray).passthrough
    img = np.linspace(0, 1000, 10000).reshape(100, 100)
    img[0, 0] = np.nan
    norm = IntensityNorm.from_data(img)
    assert 0 < norm.low < 10 and 990 < norm.high < 1000
    flat = IntensityNorm.from_data(np.full((10, 10), 7.0))
    assert flat.high > flat.low


def test_nan_pixels_do_not_poison_the_embedding() -> None:
    torch.manual_seed(0)
    p = Predictor(build_sam(SMALL))
    img = np.random.default_rng(1).normal(100, 10, (64, 64))
    img[5:10, 5:10] = np.nan
    p.set_image(img)
    assert torch.isfinite(p.embedding.features).all()


def test_batched_boxes_match_single_calls(predictor: Predictor) -> None:
    boxes = [[10, 10, 60, 80], [100, 150, 180, 290]]
    many = predictor.predict_boxes(boxes)
    for box, pred in zip(boxes, many):
        one = predictor.predict(box=box, multimask=False)
        np.testing.assert_allclose(pred.scores, one.scores, atol=1e-5)
        assert (pred.masks != one.masks).mean() < 1e-4
