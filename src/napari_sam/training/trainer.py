"""Fine-tuning SAM with its interactive training recipe (Kirillov et al. 2023, sec. 3 and App. A).

Per step: one image (a random crop of a training plane) is encoded once; a batch of its
objects is decoded for ``iterations`` rounds. Round 1 uses a random first prompt for all
objects of the step: one positive point (ambiguous: 3 masks, only the best carries the loss),
a jittered box, or a rough mask. Each later round adds one click sampled from the previous
prediction's error region (false negative -> positive, false positive -> negative) and feeds
the previous low-res logits back as the mask prompt (single mask output). The loss of every
round is 20 x focal + 1 x dice + IoU MSE (:mod:`napari_sam.training.losses`).

Checkpoints are ``{"model": state_dict, "config": SamConfig.to_dict(), "train_state": ...}``:
:func:`napari_sam.load_model` loads them directly and :func:`train` resumes from them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sam._download import _is_cancelled
from napari_sam.model import Sam
from napari_sam.training.data import Plane, planes_from_pairs, sample_example
from napari_sam.training.recipe import Step, train_step

__all__ = ["TrainConfig", "TrainResult", "export_weights", "save_checkpoint", "train", "validation_loss"]

@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (all recorded in the checkpoint).

    Attributes
    ----------
    steps : total optimizer steps (one image per step).
    lr, min_lr_ratio, warmup_steps : AdamW learning rate; linear warm-up for ``warmup_steps``,
        then cosine decay to ``lr * min_lr_ratio`` at ``steps``.
    weight_decay, grad_clip : AdamW weight decay; gradient norm clipping (0 disables it).
    objects_per_image : objects decoded per step (fewer if the image has fewer).
    iterations : graded decoding rounds per object: the first prompt + ``iterations - 1`` clicks.
    extra_rounds : at most this many free correction rounds (no gradients; their count drawn
        uniformly from 0..extra_rounds each step) between the first round and the later graded
        ones, so the model learns from longer click sequences at the cost of forward passes
        only. 0 (default): SAM's recipe as the paper lays it out, every round graded.
    prompt_probs : probabilities of the first prompt being (point, box, mask).
    interior_first_prob : chance that a first point is the object's interior point (as the
        evaluation protocol clicks) rather than a uniformly drawn pixel of the object.
    center_click_prob : chance that a correction click is the centre of the largest error
        region rather than a uniformly drawn error pixel.
    box_noise, box_max_shift : box jitter, as a fraction of the box side and in pixels.
    freeze_encoder : train only the prompt encoder and mask decoder.
    crop_prob, min_crop, augment : random crops (side >= min_crop) and flips/rotations.
    degrade_prob : share of examples blurred, noised, unevenly lit and/or gamma-changed
        (:func:`napari_sam.training.augment.degrade`); 0 (default) leaves images as given.
    min_object_area : smallest object (pixels of the crop) used as a target.
    loss_upsample : the loss is computed on the low-res logits upsampled by this factor.
    focal_weight, dice_weight, iou_weight : loss weights (SAM: 20, 1, 1).
    focal_warmup_steps : the focal weight grows linearly from 0 to ``focal_weight`` over these
        first steps. 0 (default) for fine-tuning; training from scratch needs it, because the
        focal term alone first drives a random model to predict background everywhere, a
        plateau it leaves only after hundreds of steps.
    attention_weight : weight of the auxiliary attention supervision
        (:mod:`napari_sam.training.attention_aux`); 0 (default) for SAM's recipe as published.
    precision : "fp32", or "bf16" to run forward passes under bf16 autocast (float32 weights).
    checkpoint_every : steps between checkpoints (and at the end).
    seed : seeds the model-independent randomness (data, prompts); step i uses (seed, i).
    device : None for the model's device.
    """

    steps: int = 1000
    lr: float = 1e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    objects_per_image: int = 8
    iterations: int = 3
    extra_rounds: int = 0
    prompt_probs: tuple[float, float, float] = (0.5, 0.35, 0.15)
    interior_first_prob: float = 0.3
    center_click_prob: float = 0.5
    box_noise: float = 0.1
    box_max_shift: float = 20.0
    freeze_encoder: bool = False
    crop_prob: float = 0.5
    min_crop: int = 128
    augment: bool = True
    degrade_prob: float = 0.0
    min_object_area: int = 20
    loss_upsample: int = 2
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_warmup_steps: int = 0
    attention_weight: float = 0.0
    precision: str = "fp32"
    checkpoint_every: int = 200
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "objects_per_image", "iterations", "min_crop", "loss_upsample"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.extra_rounds) < 0:
            raise ValueError(f"TrainConfig.extra_rounds must be >= 0, got {self.extra_rounds}")
        if self.extra_rounds and self.iterations < 2:
            raise ValueError("TrainConfig.extra_rounds needs iterations >= 2: free rounds run between "
                             "the first graded round and the later ones")
        if not 0.0 <= self.degrade_prob <= 1.0:
            raise ValueError(f"TrainConfig.degrade_prob must be in [0, 1], got {self.degrade_prob}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        probs = tuple(float(p) for p in self.prompt_probs)
        if len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(
                f"TrainConfig.prompt_probs must be 3 non-negative weights for (point, box, mask), "
                f"got {self.prompt_probs}"
            )
        object.__setattr__(self, "prompt_probs", probs)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"TrainConfig.precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : the trained model (train mode off).
    steps : steps done in total, including those of a resumed run.
    checkpoint : the last checkpoint written (``out``).
    cancelled : True if the cancel token stopped the run (a checkpoint was still written).
    history : one dict per step of this run: step, loss, mask_loss, iou_loss, iou_first,
        iou_last (IoU of the chosen mask after the first and the last round), prompt (the first
        prompt: 0 point, 1 box, 2 mask), extra_rounds (free rounds run), lr, seconds.
    """

    model: Sam
    steps: int
    checkpoint: Path
    cancelled: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(path: str | os.PathLike[str], model: Sam, train_state: dict[str, Any] | None = None) -> Path:
    """Write ``{"model", "config", "train_state"}`` atomically (a temporary file, then a rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": model.config.to_dict(),  # type: ignore[attr-defined]
    }
    if train_state is not None:
        payload["train_state"] = train_state
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return out


def export_weights(model: Sam, path: str | os.PathLike[str], half: bool = True) -> str:
    """Write inference-only weights (no optimizer state), float16 if ``half``, plus the
    ``.sha256`` sidecar; return the sha256 hex digest. :func:`napari_sam.load_model` casts the
    tensors back to float32 when it loads them."""
    from napari_sam.weights import write_sha256_sidecar

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {
        k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": state, "config": model.config.to_dict()}, tmp)  # type: ignore[attr-defined]
    os.replace(tmp, out)
    return write_sha256_sidecar(out)


def _resolve_model(model: Sam | str | os.PathLike[str], device: str | None) -> Sam:
    if isinstance(model, Sam):
        return model if device is None else model.to(device)
    from napari_sam.weights import load_model

    return load_model(model, device=device, precision="fp32")


def _as_planes(data: Sequence[tuple[np.ndarray, np.ndarray]] | Sequence[Plane]) -> list[Plane]:
    return list(data) if data and isinstance(data[0], Plane) else planes_from_pairs(data)  # type: ignore[arg-type]


def _draw_example(
    planes: list[Plane], rng: np.random.Generator, cfg: TrainConfig, degrade: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One example drawn as ``cfg`` says (crops, flips, object count, minimum area); degraded
    with ``cfg.degrade_prob`` only if ``degrade`` (training, not validation)."""
    return sample_example(
        planes, rng, max_objects=cfg.objects_per_image, crop_prob=cfg.crop_prob,
        min_crop=cfg.min_crop, augment=cfg.augment, min_area=cfg.min_object_area,
        degrade_prob=cfg.degrade_prob if degrade else 0.0,
    )


@torch.no_grad()
def validation_loss(
    model: Sam,
    data: Sequence[tuple[np.ndarray, np.ndarray]] | Sequence[Plane],
    config: TrainConfig | None = None,
    n: int = 4,
    seed: int = 12345,
) -> float:
    """Mean training loss on ``n`` fixed examples (the same crops and prompts for the same
    ``seed``), without updating the model: a validation score comparable between checkpoints.
    The examples are never degraded (``config.degrade_prob`` is ignored), so runs with different
    degradation settings are compared on the same images. Free rounds (``config.extra_rounds``)
    do run and change the click sequence: compare checkpoints under one ``extra_rounds``."""
    cfg = config or TrainConfig()
    planes = _as_planes(data)
    losses = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image, masks = _draw_example(planes, rng, cfg, degrade=False)
        loss, _ = train_step(model, Step(model, image, masks, cfg), rng)
        losses.append(float(loss))
    return float(np.mean(losses))


def train(
    model: Sam | str | os.PathLike[str],
    data: Sequence[tuple[np.ndarray, np.ndarray]] | Sequence[Plane],
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fine-tune (or train) a SAM model on instance-labelled images.

    Parameters
    ----------
    model : Sam, registry name or checkpoint path
        The starting point (e.g. ``"tiny-synth"``, ``"vit_b"``, ``"my_model.pt"``). Ignored
        when ``resume`` is given, except that a Sam instance receives the resumed weights.
    data : sequence of (image, labels) pairs, or of :class:`~napari_sam.training.data.Plane`
        2D images (Y, X) / (Y, X, C) with (Y, X) labels, or 3D stacks (Z, Y, X) with
        (Z, Y, X) labels (trained on as z slices). Labels: instance IDs, 0 = background.
    out : path
        Checkpoint file, written every ``config.checkpoint_every`` steps and at the end.
    config : TrainConfig, optional
    resume : path, optional
        A checkpoint written by this function: weights, optimizer, schedule and step count are
        restored and training continues to ``config.steps`` (the stored config is used when
        ``config`` is None).
    progress : callable, optional
        ``progress(step, total_steps)`` after every step.
    cancel : cancel token, optional
        A callable returning True, a ``threading.Event`` or an object with ``.cancelled``;
        checked every step. A checkpoint is written before returning.
    log : callable, optional
        Called with the step's statistics dict (see :attr:`TrainResult.history`).

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        Data without usable objects or with mismatched shapes.
    ValueError
        Invalid config values, or a ``resume`` file without a training state.
    """
    state: dict[str, Any] = {}
    if resume is not None:
        from napari_sam._checkpoint import _torch_load

        raw = _torch_load(Path(resume))
        state = raw.get("train_state") if isinstance(raw, dict) else None
        if not state:
            raise ValueError(f"{resume} holds no training state; pass it as the model to fine-tune instead")
        if config is None:
            config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        model = model if isinstance(model, Sam) else resume
        net = _resolve_model(model, config.device)
        net.load_state_dict(raw["model"])
    else:
        config = config or TrainConfig()
        net = _resolve_model(model, config.device)
    cfg = config
    planes = _as_planes(data)
    net.train()
    for p in net.image_encoder.parameters():
        p.requires_grad_(not cfg.freeze_encoder)
    if cfg.freeze_encoder:
        net.image_encoder.eval()
    params = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    start = int(state.get("step", 0))
    elapsed = float(state.get("elapsed_s", 0.0))
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    history: list[dict[str, float]] = []
    out_path = Path(out)
    cancelled = False

    def checkpoint(step: int) -> None:
        save_checkpoint(out_path, net, {
            "step": step, "config": cfg.to_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "elapsed_s": elapsed,
        })

    step = start
    for step in range(start, cfg.steps):
        if _is_cancelled(cancel):
            cancelled = True
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step])
        image, masks = _draw_example(planes, rng, cfg, degrade=True)
        focal_scale = min(1.0, (step + 1) / cfg.focal_warmup_steps) if cfg.focal_warmup_steps else 1.0
        loss, stats = train_step(net, Step(net, image, masks, cfg), rng, focal_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        seconds = time.perf_counter() - t0
        elapsed += seconds
        record = {"step": step + 1, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                  "seconds": seconds, **stats}
        history.append(record)
        if log is not None:
            log(record)
        if progress is not None:
            progress(step + 1, cfg.steps)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            checkpoint(step + 1)
    else:
        step = cfg.steps
    done = step if cancelled else cfg.steps
    checkpoint(done)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)
    return TrainResult(model=net, steps=done, checkpoint=out_path, cancelled=cancelled, history=history)
