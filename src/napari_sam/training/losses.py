"""SAM's training losses: 20 x focal + 1 x dice on masks, MSE on the predicted IoU.

All functions take mask logits of shape (B, K, H, W) (B objects, K candidate masks each) and
targets of shape (B, 1, H, W) in [0, 1] (hard 0/1 masks, or soft area fractions of a mask
resampled to the logits' grid). Losses are computed in float32 whatever the input dtype.

With several candidates (SAM's multimask output for an ambiguous prompt) only the candidate
with the lowest mask loss carries the mask loss ("best of 3", Kirillov et al. 2023, sec. 3);
the IoU head is trained on every candidate, so the predicted scores can rank them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossOutput", "dice_loss", "focal_loss", "mask_iou", "sam_loss"]

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 4:
        raise ValueError(
            f"logits must be (B, K, H, W) and target (B, 1, H, W), got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    if target.shape[0] != logits.shape[0] or target.shape[-2:] != logits.shape[-2:] or target.shape[1] != 1:
        raise ValueError(
            f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            "expected (B, 1, H, W) with the logits' B, H and W"
        )


def focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), averaged over pixels.

    Parameters
    ----------
    logits : (B, K, H, W)
    target : (B, 1, H, W) in [0, 1]
    alpha : float
        Weight of the positive class (1 - alpha for the negative); ``alpha < 0`` disables it.
    gamma : float
        Focusing exponent; 0 gives plain binary cross-entropy.

    Returns
    -------
    (B, K) float32 tensor
    """
    _check(logits, target)
    x = logits.float()
    t = target.float().expand_as(x)
    prob = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean(dim=(-2, -1))


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft dice loss ``1 - (2 |p t| + s) / (|p| + |t| + s)`` with p = sigmoid(logits).

    Parameters
    ----------
    logits : (B, K, H, W)
    target : (B, 1, H, W) in [0, 1]
    smooth : float
        Added to numerator and denominator (an empty prediction of an empty target scores 0).

    Returns
    -------
    (B, K) float32 tensor
    """
    _check(logits, target)
    prob = torch.sigmoid(logits.float())
    t = target.float()
    inter = (prob * t).sum(dim=(-2, -1))
    total = prob.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1))
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


@torch.no_grad()
def mask_iou(logits: Tensor, target: Tensor, threshold: float = 0.0) -> Tensor:
    """IoU of the thresholded masks ``logits > threshold`` with ``target > 0.5``.

    Returns
    -------
    (B, K) float32 tensor; 1.0 where prediction and target are both empty.
    """
    _check(logits, target)
    pred = logits > threshold
    t = (target > 0.5).expand_as(pred)
    inter = (pred & t).sum(dim=(-2, -1)).float()
    union = (pred | t).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


@dataclass
class LossOutput:
    """Result of :func:`sam_loss`.

    Attributes
    ----------
    total : scalar tensor
        ``mask + iou_weight * iou``, the value to back-propagate.
    mask : scalar tensor
        Mean over objects of the best candidate's ``20 focal + 1 dice``.
    iou : scalar tensor
        Mean squared error between predicted and actual IoU, over all candidates.
    best : (B,) int64
        Index of the candidate that carried the mask loss for each object.
    actual_iou : (B, K) float32
        IoU of every candidate with the target (no gradient).
    """

    total: Tensor
    mask: Tensor
    iou: Tensor
    best: Tensor
    actual_iou: Tensor


def sam_loss(
    logits: Tensor,
    iou_pred: Tensor,
    target: Tensor,
    *,
    focal_weight: float = FOCAL_WEIGHT,
    dice_weight: float = DICE_WEIGHT,
    iou_weight: float = IOU_WEIGHT,
) -> LossOutput:
    """SAM's loss for one decoding round.

    Parameters
    ----------
    logits : (B, K, H, W)
        Mask logits; K = 1 (single output) or 3 (multimask output).
    iou_pred : (B, K)
        The IoU head's predictions.
    target : (B, 1, H, W) in [0, 1]
        Ground-truth masks on the logits' grid.
    focal_weight, dice_weight, iou_weight : float
        Loss weights; SAM uses 20, 1, 1.

    Returns
    -------
    LossOutput
        The best-of-K candidate (lowest ``focal_weight * focal + dice_weight * dice``) carries
        the mask loss; the IoU MSE covers all K candidates.
    """
    if iou_pred.shape != logits.shape[:2]:
        raise ValueError(
            f"iou_pred must be (B, K) = {tuple(logits.shape[:2])}, got {tuple(iou_pred.shape)}"
        )
    per_mask = focal_weight * focal_loss(logits, target) + dice_weight * dice_loss(logits, target)
    best = per_mask.argmin(dim=1)
    mask_term = per_mask.gather(1, best[:, None]).mean()
    actual = mask_iou(logits, target)
    iou_term = F.mse_loss(iou_pred.float(), actual)
    return LossOutput(
        total=mask_term + iou_weight * iou_term,
        mask=mask_term,
        iou=iou_term,
        best=best,
        actual_iou=actual,
    )
