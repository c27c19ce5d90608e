"""SAM's losses on hand-made tensors with known values."""

from __future__ import annotations

import math

import pytest
import torch

from napari_sam.training.losses import dice_loss, focal_loss, mask_iou, sam_loss


def test_focal_loss_known_values_at_zero_logits() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    # p = 0.5: ce = ln 2, (1 - p_t)^2 = 1/4; alpha 0.25 on positives, 0.75 on negatives
    assert focal_loss(logits, ones).item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    assert focal_loss(logits, zeros).item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)
    assert focal_loss(logits, ones, alpha=-1, gamma=0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_focal_loss_is_small_for_confident_correct_and_large_for_confident_wrong() -> None:
    target = torch.tensor([[[[1.0, 0.0]]]])
    right = torch.tensor([[[[8.0, -8.0]]]])
    assert focal_loss(right, target).item() < 1e-6
    assert focal_loss(-right, target).item() > 1.0


def test_dice_loss_known_values() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1  # 4 pixels
    perfect = torch.where(target > 0, 50.0, -50.0)
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # empty prediction: 1 - (0 + 1) / (0 + 4 + 1)
    empty = torch.full_like(target, -50.0)
    assert dice_loss(empty, target).item() == pytest.approx(1 - 1 / 5, rel=1e-5)
    # the exact complement (12 pixels on, none right): 1 - 1 / (12 + 4 + 1)
    assert dice_loss(-perfect, target).item() == pytest.approx(1 - 1 / 17, rel=1e-5)


def test_mask_iou_counts_pixels() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1  # 8 pixels
    logits = torch.full((1, 2, 4, 4), -1.0)
    logits[0, 0, :1, :] = 1  # 4 of the 8
    logits[0, 1] = 1  # all 16
    assert mask_iou(logits, target).tolist() == [[0.5, 0.5]]


def test_best_of_three_carries_the_mask_loss() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good = torch.where(target[:, 0] > 0, 20.0, -20.0)
    logits = torch.stack([-good, good, torch.zeros_like(good)], dim=1)  # candidate 1 is right
    logits[1] = logits[1].roll(1, dims=0)  # object 2: candidate 2 is right
    iou_pred = torch.zeros(2, 3, requires_grad=True)
    out = sam_loss(logits, iou_pred, target)
    assert out.best.tolist() == [1, 2]
    assert out.mask.item() == pytest.approx(0.0, abs=1e-4)
    # IoU MSE over all candidates: actual IoUs are [0, 1, 0] and [0, 0, 1]
    assert out.iou.item() == pytest.approx(2 / 6, rel=1e-5)
    out.total.backward()
    assert iou_pred.grad is not None and iou_pred.grad.abs().sum() > 0


def test_loss_weights_are_20_focal_1_dice() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1
    logits = torch.zeros(1, 1, 4, 4)
    out = sam_loss(logits, torch.zeros(1, 1), target, iou_weight=0.0)
    expected = 20 * focal_loss(logits, target) + dice_loss(logits, target)
    assert out.mask.item() == pytest.approx(expected.item(), rel=1e-6)


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not match"):
        focal_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="iou_pred"):
        sam_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1), torch.zeros(1, 1, 4, 4))
