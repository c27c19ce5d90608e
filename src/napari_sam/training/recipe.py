"""One step of SAM's interactive training recipe: prompts, targets, decoding rounds, loss.

Used by :func:`napari_sam.training.trainer.train`; see that module for the recipe as a whole.
Coordinates: prompts are sampled on the original crop in (row, col) and mapped to SAM's
(x, y) model frame exactly as :class:`napari_sam.predictor.Predictor` maps a user's clicks;
correction clicks are sampled on the loss grid (the low-res logits upsampled by
``loss_upsample``) and mapped to the model frame from the centre of their grid cell.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam.model import Sam
from napari_sam.preprocess import mask_to_logits, to_model_input
from napari_sam.training.attention_aux import AttentionProbe, prompt_token_weights
from napari_sam.training.losses import sam_loss
from napari_sam.training.prompts import (
    box_of,
    interior_point,
    jitter_box,
    perturb_mask,
    random_point,
    sample_correction,
)

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.training.trainer import TrainConfig

__all__ = ["PROMPT_KINDS", "Step", "train_step"]

PROMPT_KINDS = ("point", "box", "mask")


class Step:
    """One training step's prompts and targets for a batch of objects of one image."""

    def __init__(self, model: Sam, image: np.ndarray, masks: np.ndarray, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        dev = model.device
        img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        x = to_model_input(img.astype(np.float32), model.img_size)
        self.input_size = (int(x.shape[-2]), int(x.shape[-1]))
        self.pixels = model.normalize_and_pad(x.to(dev))
        self.masks = masks
        self.scale = (self.input_size[0] / masks.shape[1], self.input_size[1] / masks.shape[2])
        size = model.img_size
        he = model.prompt_encoder.image_embedding_size[0]
        self.low_res = 4 * he
        self.grid = self.low_res * cfg.loss_upsample
        self.factor = size / self.grid
        m = torch.from_numpy(masks.astype(np.float32))[:, None]
        if self.input_size != masks.shape[1:]:
            m = F.interpolate(m, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        m = F.pad(m, (0, size - self.input_size[1], 0, size - self.input_size[0]))
        self.target = F.interpolate(m, size=(self.grid, self.grid), mode="area").to(dev)
        self.target_np = (self.target[:, 0] > 0.5).cpu().numpy()
        self.valid = np.zeros((self.grid, self.grid), dtype=bool)
        self.valid[: math.ceil(self.input_size[0] / self.factor), : math.ceil(self.input_size[1] / self.factor)] = True

    def to_model_xy(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Original-image (row, col) pixels -> model-frame (x, y), as the Predictor maps them."""
        return np.stack([cols * self.scale[1], rows * self.scale[0]], axis=-1)

    def first_prompt(self, kind: str, rng: np.random.Generator) -> dict[str, Any]:
        dev, cfg, n = self.model.device, self.cfg, len(self.masks)
        if kind == "point":
            pts = [
                interior_point(m) if rng.random() < cfg.interior_first_prob else random_point(m, rng)
                for m in self.masks
            ]
            rc = np.asarray(pts, dtype=np.float64)
            xy = self.to_model_xy(rc[:, 0], rc[:, 1])[:, None]
            return {"coords": torch.as_tensor(xy, dtype=torch.float32, device=dev),
                    "labels": torch.ones(n, 1, dtype=torch.int64, device=dev)}
        if kind == "box":
            boxes = np.stack([
                jitter_box(box_of(m), rng, m.shape, cfg.box_noise, cfg.box_max_shift) for m in self.masks
            ])
            xy0 = self.to_model_xy(boxes[:, 0], boxes[:, 1])
            xy1 = self.to_model_xy(boxes[:, 2], boxes[:, 3])
            return {"boxes": torch.as_tensor(np.concatenate([xy0, xy1], 1), dtype=torch.float32, device=dev)}
        low = (self.low_res, self.low_res)
        rough = [
            mask_to_logits(perturb_mask(m, rng), self.model.img_size, low, float(rng.uniform(4, 12)))
            for m in self.masks
        ]
        return {"mask": torch.cat(rough).to(dev)}

    def correction(self, pred: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One click per object from the error region of ``pred`` (B, G, G) on the loss grid:
        coords (B, 1, 2) model-frame (x, y), labels (B, 1) (-1 where there is no error)."""
        coords = np.zeros((len(pred), 1, 2), dtype=np.float32)
        labels = np.full((len(pred), 1), -1, dtype=np.int64)
        for i, (p, t) in enumerate(zip(pred, self.target_np)):
            click = sample_correction(p, t, rng, self.cfg.center_click_prob, self.valid)
            if click is not None:
                r, c = click.point
                coords[i, 0] = ((c + 0.5) * self.factor - 0.5, (r + 0.5) * self.factor - 0.5)
                labels[i, 0] = click.label
        dev = self.model.device
        return torch.from_numpy(coords).to(dev), torch.from_numpy(labels).to(dev)


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    from napari_sam.devices import autocast_for

    return autocast_for(cfg.precision, device)


def train_step(
    model: Sam, step: Step, rng: np.random.Generator, focal_scale: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Decode ``step``'s objects for ``cfg.iterations`` graded rounds; return the mean loss over
    them (to back-propagate) and statistics. ``focal_scale`` multiplies the focal weight.

    With ``cfg.extra_rounds`` > 0, a number of free rounds drawn from 0..extra_rounds runs
    between the first round and the later graded ones: each adds a correction click and feeds
    its logits back, without gradients, so the graded rounds see longer click sequences (as a
    user's fifth or eighth click) at the cost of forward passes only."""
    cfg = step.cfg
    with _autocast(cfg, model.device):
        if cfg.freeze_encoder:
            with torch.no_grad():
                embedding = model.encode(step.pixels)
        else:
            embedding = model.encode(step.pixels)
    kind_index = int(rng.choice(3, p=np.asarray(cfg.prompt_probs) / sum(cfg.prompt_probs)))
    kind = PROMPT_KINDS[kind_index]
    first = step.first_prompt(kind, rng)
    coords, labels = first.get("coords"), first.get("labels")
    boxes, mask_in = first.get("boxes"), first.get("mask")
    total = torch.zeros((), device=model.device)
    stats: dict[str, float] = {"mask_loss": 0.0, "iou_loss": 0.0, "prompt": float(kind_index)}
    probe = AttentionProbe(model) if cfg.attention_weight > 0 else None
    free = int(rng.integers(0, cfg.extra_rounds + 1)) if cfg.extra_rounds else 0
    graded_rounds = [True] + [False] * free + [True] * (cfg.iterations - 1)
    stats["extra_rounds"] = float(free)
    for round_, graded in enumerate(graded_rounds):
        multimask = round_ == 0 and kind == "point"
        points = (coords, labels) if coords is not None else None
        with _autocast(cfg, model.device), torch.set_grad_enabled(graded and torch.is_grad_enabled()):
            low, iou_pred = model.decode(embedding, points=points, boxes=boxes, masks=mask_in,
                                         multimask_output=multimask)
        up = F.interpolate(low.float(), size=(step.grid, step.grid), mode="bilinear", align_corners=False)
        rows = torch.arange(len(low), device=low.device)
        if graded:
            if probe is not None:
                n_points = 0 if coords is None else coords.shape[1]
                weights = prompt_token_weights(labels, n_points, boxes is not None, len(low))
                aux = probe.loss(weights.to(low.device), step.target)
                total = total + cfg.attention_weight * aux
                stats["attention_loss"] = stats.get("attention_loss", 0.0) + float(aux.detach()) / cfg.iterations
            out = sam_loss(up, iou_pred.float(), step.target, focal_weight=cfg.focal_weight * focal_scale,
                           dice_weight=cfg.dice_weight, iou_weight=cfg.iou_weight)
            total = total + out.total
            stats["mask_loss"] += float(out.mask.detach()) / cfg.iterations
            stats["iou_loss"] += float(out.iou.detach()) / cfg.iterations
            chosen = out.best
            iou_now = float(out.actual_iou[rows, chosen].mean())
            if round_ == 0:
                stats["iou_first"] = iou_now
            stats["iou_last"] = iou_now
        else:  # a free round: single mask output, nothing to learn from, nothing recorded
            if probe is not None:
                probe.records.clear()
            chosen = torch.zeros_like(rows)
        if round_ + 1 == len(graded_rounds):
            break
        mask_in = low.float()[rows, chosen][:, None].detach()
        pred = (up[rows, chosen] > 0).detach().cpu().numpy()
        new_xy, new_lab = step.correction(pred, rng)
        coords = new_xy if coords is None else torch.cat([coords, new_xy], 1)
        labels = new_lab if labels is None else torch.cat([labels, new_lab], 1)
    if probe is not None:
        probe.__exit__()
    return total / cfg.iterations, stats
