"""Our SAM against the official ``segment-anything`` package (test-only oracle, see tests/oracle.py).

Both get the same random weights (saved by the reference, loaded strict by ours). Images are RGB
uint8, the input the official predictor passes to the network unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.model import build_sam, infer_config
from napari_sam.predictor import Predictor
from oracle import build_reference, randomize, segment_anything

CASES = [("vit_b", None), ("vit_l", 4), ("vit_h", 4)]


def _image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 image with a few bright blobs, so masks are not trivial."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros((*shape, 3), np.float64)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(40, 150)
        img += rng.uniform(80, 200, size=3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))[..., None]
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-depth{d or 'full'}" for a, d in CASES])
def pair(request: pytest.FixtureRequest) -> tuple:
    arch, depth = request.param
    torch.manual_seed(0)
    ref = build_reference(arch, depth=depth)
    randomize(ref, seed=1)
    ours = build_sam(infer_config(ref.state_dict()))
    ours.load_state_dict(ref.state_dict(), strict=True)
    image = _image((1024, 1024))
    sa = segment_anything()
    ref_pred = sa.SamPredictor(ref)
    ref_pred.set_image(image)
    our_pred = Predictor(ours)
    our_pred.set_image(image)
    return ref_pred, our_pred, image


def test_image_embedding_matches(pair: tuple) -> None:
    ref_pred, our_pred, _ = pair
    ref_emb = ref_pred.get_image_embedding()
    ours = our_pred.embedding.features
    assert ours.shape == ref_emb.shape == (1, 256, 64, 64)
    assert (ours - ref_emb).abs().max().item() <= 1e-4


PROMPTS = {
    "one_point": dict(points=[[300.0, 420.0]], labels=[1], box=None, multimask=True),
    "several_points": dict(points=[[300.0, 420.0], [520.0, 610.0], [700.0, 200.0]], labels=[1, 1, 0],
                           box=None, multimask=False),
    "box": dict(points=None, labels=None, box=[200.0, 300.0, 650.0, 800.0], multimask=False),
    "box_and_points": dict(points=[[400.0, 500.0], [250.0, 350.0]], labels=[1, 0],
                           box=[200.0, 300.0, 650.0, 800.0], multimask=True),
}


def _reference_predict(ref_pred, prompt: dict, mask_input=None, return_logits=False):  # noqa: ANN001, ANN202
    pts = None if prompt["points"] is None else np.asarray(prompt["points"])[:, ::-1].copy()
    box = None if prompt["box"] is None else np.asarray(prompt["box"])[[1, 0, 3, 2]]
    labels = None if prompt["labels"] is None else np.asarray(prompt["labels"])
    masks, scores, low = ref_pred.predict(
        point_coords=pts, point_labels=labels, box=box, mask_input=mask_input,
        multimask_output=prompt["multimask"], return_logits=return_logits,
    )
    order = np.argsort(-scores, kind="stable")
    return masks[order], scores[order], low[order]


def assert_masks_identical(pred, our_pred, ref_pred, prompt: dict, mask_input=None) -> None:  # noqa: ANN001
    """Full-resolution logits (the values, not only their signs, so even an all-foreground mask is
    a real comparison) agree to 1e-4 of their scale, and masks are identical at every pixel
    whose reference logit is farther from the threshold than the largest difference between the two
    implementations (closer than that, float rounding of two correct computations decides)."""
    ref_logits = _reference_predict(ref_pred, prompt, mask_input, return_logits=True)[0]
    ours = our_pred.upscale(torch.from_numpy(pred.logits)[None])[0].numpy()
    scale = np.abs(ref_logits).max()
    max_diff = np.abs(ours - ref_logits).max()
    assert max_diff <= 1e-4 * scale
    decided = np.abs(ref_logits) > 2 * max_diff
    np.testing.assert_array_equal(pred.masks[decided], ref_logits[decided] > 0)
    assert (~decided).mean() < 1e-3


@pytest.mark.parametrize("name", list(PROMPTS))
def test_masks_and_scores_match(pair: tuple, name: str) -> None:
    ref_pred, our_pred, _ = pair
    prompt = PROMPTS[name]
    ref_masks, ref_scores, ref_low = _reference_predict(ref_pred, prompt)
    pred = our_pred.predict(points=prompt["points"], point_labels=prompt["labels"], box=prompt["box"],
                            multimask=prompt["multimask"])
    assert pred.masks.shape == ref_masks.shape
    assert pred.masks.dtype == bool
    np.testing.assert_allclose(pred.scores, ref_scores, atol=1e-4)
    assert_masks_identical(pred, our_pred, ref_pred, prompt)
    np.testing.assert_allclose(pred.logits, ref_low, atol=1e-3)


def test_mask_input_matches(pair: tuple) -> None:
    ref_pred, our_pred, _ = pair
    first = PROMPTS["one_point"]
    _, _, ref_low = _reference_predict(ref_pred, first)
    prompt = dict(first, multimask=False, points=[[300.0, 420.0], [600.0, 600.0]], labels=[1, 0])
    ref_masks, ref_scores, _ = _reference_predict(ref_pred, prompt, mask_input=ref_low[:1])
    pred = our_pred.predict(points=prompt["points"], point_labels=prompt["labels"],
                            mask_input=ref_low[:1], multimask=False)
    np.testing.assert_allclose(pred.scores, ref_scores, atol=1e-4)
    assert_masks_identical(pred, our_pred, ref_pred, prompt, mask_input=ref_low[:1])


def test_resized_image_close_to_reference() -> None:
    """Off-size images: we resize with torch's antialiased bilinear, the reference with PIL."""
    torch.manual_seed(0)
    ref = build_reference("vit_b", depth=4)
    randomize(ref, seed=2)
    ours = build_sam(infer_config(ref.state_dict()))
    ours.load_state_dict(ref.state_dict(), strict=True)
    image = _image((600, 850), seed=3)
    ref_pred = segment_anything().SamPredictor(ref)
    ref_pred.set_image(image)
    our_pred = Predictor(ours)
    our_pred.set_image(image)
    ref_emb = ref_pred.get_image_embedding()
    rel = (our_pred.embedding.features - ref_emb).norm() / ref_emb.norm()
    assert rel.item() < 0.05
    prompt = dict(points=[[250.0, 400.0]], labels=[1], box=[150.0, 250.0, 450.0, 700.0], multimask=False)
    ref_masks, ref_scores, _ = _reference_predict(ref_pred, prompt)
    pred = our_pred.predict(points=prompt["points"], point_labels=[1], box=prompt["box"], multimask=False)
    inter = np.logical_and(pred.masks, ref_masks).sum()
    union = np.logical_or(pred.masks, ref_masks).sum()
    assert union > 0 and inter / union > 0.97
    np.testing.assert_allclose(pred.scores, ref_scores, atol=0.02)
