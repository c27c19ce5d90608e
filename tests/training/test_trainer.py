"""The training loop on tiny synthetic pairs with a tiny SAM: learning, checkpoints, resume."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam.model import Sam
from napari_sam.training.data import DataError, planes_from_pairs
from napari_sam.training.trainer import TrainConfig, export_weights, train, validation_loss
from napari_sam.weights import load_model

FAST = dict(lr=3e-3, warmup_steps=3, objects_per_image=4, iterations=2, min_crop=64, checkpoint_every=1000)


def test_a_few_steps_reduce_the_loss_and_write_a_loadable_checkpoint(
    tiny_model: Sam, tiny_pairs: list, tmp_path: Path
) -> None:
    planes = planes_from_pairs(tiny_pairs)
    cfg = TrainConfig(steps=30, **FAST)
    before = validation_loss(tiny_model, planes, cfg, n=3)
    steps_seen: list[int] = []
    result = train(tiny_model, planes, tmp_path / "ckpt.pt", config=cfg,
                   progress=lambda done, total: steps_seen.append(done))
    after = validation_loss(result.model, planes, cfg, n=3)
    print(f"validation loss {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before
    assert steps_seen == list(range(1, 31)) and result.steps == 30 and not result.cancelled
    assert {"loss", "mask_loss", "iou_loss", "iou_first", "iou_last", "lr"} <= set(result.history[0])

    loaded = load_model(tmp_path / "ckpt.pt", precision="fp32")
    assert loaded.config == tiny_model.config
    for key, value in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_frozen_encoder_is_unchanged(tiny_model: Sam, tiny_pairs: list, tmp_path: Path) -> None:
    encoder_before = {k: v.clone() for k, v in tiny_model.image_encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in tiny_model.mask_decoder.state_dict().items()}
    result = train(tiny_model, tiny_pairs, tmp_path / "f.pt", config=TrainConfig(steps=3, freeze_encoder=True, **FAST))
    for k, v in result.model.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), k
    assert any(not torch.equal(v, decoder_before[k]) for k, v in result.model.mask_decoder.state_dict().items())


def test_resume_continues_where_the_checkpoint_stopped(tiny_model: Sam, tiny_pairs: list, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(steps=6, **FAST)
    stop = threading.Event()
    first = train(tiny_model, tiny_pairs, ckpt, config=cfg, cancel=stop,
                  progress=lambda done, total: stop.set() if done == 4 else None)
    assert first.cancelled and first.steps == 4
    resumed = train("ignored-when-resuming", tiny_pairs, tmp_path / "next.pt", config=cfg, resume=ckpt)
    assert resumed.steps == 6
    assert [h["step"] for h in resumed.history] == [5, 6]
    state = torch.load(tmp_path / "next.pt", weights_only=True)["train_state"]
    assert state["step"] == 6 and state["config"]["steps"] == 6

    # the same 6 steps in one go give the same weights (per-step randomness is (seed, step))
    straight = train(_fresh(), tiny_pairs, tmp_path / "straight.pt", config=cfg)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def _fresh() -> Sam:
    from train_helpers import TINY  # type: ignore[import-not-found]

    from napari_sam.model import build_sam

    torch.manual_seed(0)
    return build_sam(TINY)


def test_cancel_stops_and_still_writes_a_checkpoint(tiny_model: Sam, tiny_pairs: list, tmp_path: Path) -> None:
    event = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 2:
            event.set()

    result = train(tiny_model, tiny_pairs, tmp_path / "c.pt", config=TrainConfig(steps=50, **FAST),
                   progress=progress, cancel=event)
    assert result.cancelled and result.steps == 2
    assert torch.load(tmp_path / "c.pt", weights_only=True)["train_state"]["step"] == 2


def test_half_precision_export_loads_as_float32(tiny_model: Sam, tmp_path: Path) -> None:
    digest = export_weights(tiny_model, tmp_path / "w.pt")
    assert (tmp_path / "w.sha256").read_text().split()[0] == digest
    raw = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(raw) == {"model", "config"}
    assert raw["model"]["image_encoder.pos_embed"].dtype == torch.float16
    loaded = load_model(tmp_path / "w.pt", precision="fp32")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 128, 128) * 255
    with torch.no_grad():
        a = tiny_model.encode(tiny_model.normalize_and_pad(x))
        b = loaded.encode(loaded.normalize_and_pad(x))
    assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()))


def test_bad_data_and_config_are_value_errors(tiny_model: Sam, tmp_path: Path) -> None:
    image = np.zeros((32, 32), np.uint16)
    with pytest.raises(DataError, match="does not match"):
        train(tiny_model, [(image, np.zeros((16, 16), np.uint32))], tmp_path / "x.pt")
    with pytest.raises(DataError, match="no training plane"):
        train(tiny_model, [(image, np.zeros((32, 32), np.uint32))], tmp_path / "x.pt")
    with pytest.raises(DataError, match="integer"):
        train(tiny_model, [(image, np.zeros((32, 32), np.float32))], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="prompt_probs"):
        TrainConfig(prompt_probs=(0, 0, 0))
    with pytest.raises(ValueError, match="degrade_prob"):
        TrainConfig(degrade_prob=1.5)
    with pytest.raises(ValueError, match="no training state"):
        export_weights(tiny_model, tmp_path / "w.pt")
        train(tiny_model, [], tmp_path / "y.pt", resume=tmp_path / "w.pt")


def test_training_degrades_examples_and_validation_does_not(
    tiny_model: Sam, tiny_pairs: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_sam.training import data as data_module

    calls: list[tuple[int, ...]] = []
    real = data_module.degrade
    monkeypatch.setattr(data_module, "degrade", lambda img, rng: calls.append(img.shape) or real(img, rng))
    planes = planes_from_pairs(tiny_pairs)
    cfg = TrainConfig(steps=3, degrade_prob=1.0, **FAST)
    validation_loss(tiny_model, planes, cfg, n=2)
    assert calls == []  # validation compares checkpoints on clean images
    train(tiny_model, planes, tmp_path / "d.pt", config=cfg)
    assert len(calls) == 3  # every training example degraded at degrade_prob 1


def test_free_rounds_add_clicks_without_gradients(
    tiny_model: Sam, tiny_pairs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_sam.training import recipe
    from napari_sam.training.data import sample_example

    calls: list[tuple[int, bool, bool]] = []
    real = tiny_model.decode

    def spy(embedding: torch.Tensor, points: tuple | None = None, **kw: object) -> tuple:
        n_points = 0 if points is None else int(points[0].shape[1])
        calls.append((n_points, torch.is_grad_enabled(), kw.get("masks") is not None))
        return real(embedding, points=points, **kw)

    probed: list[int] = []  # attention records the auxiliary loss sees at each call
    real_loss = recipe.AttentionProbe.loss

    def loss_spy(self: recipe.AttentionProbe, *args: object) -> torch.Tensor:
        probed.append(len(self.records))
        return real_loss(self, *args)

    monkeypatch.setattr(tiny_model, "decode", spy)
    monkeypatch.setattr(recipe.AttentionProbe, "loss", loss_spy)
    # first prompt a point, 2 graded rounds, attention supervision on (as in PHASE4_CONFIG)
    cfg = TrainConfig(extra_rounds=4, prompt_probs=(1, 0, 0), attention_weight=1.0, **FAST)
    planes = planes_from_pairs(tiny_pairs)
    seen = set()
    for seed in range(8):
        calls.clear()
        probed.clear()
        rng = np.random.default_rng(seed)
        image, masks = sample_example(planes, rng, max_objects=4, min_crop=64)
        loss, stats = recipe.train_step(tiny_model, recipe.Step(tiny_model, image, masks, cfg), rng)
        free = int(stats["extra_rounds"])
        seen.add(free)
        # first round graded, then the free rounds without gradients, then the last graded one;
        # every round after the first carries one more click and the previous logits
        assert [grad for _, grad, _ in calls] == [True] + [False] * free + [True]
        assert [n for n, _, _ in calls] == list(range(1, free + 3))
        assert [has_mask for _, _, has_mask in calls] == [False] + [True] * (free + 1)
        # the attention loss runs once per graded round, on that round's records only
        assert len(probed) == 2 and probed[0] == probed[1] > 0
        assert loss.requires_grad
    assert len(seen) > 1 and seen <= set(range(5))
    with pytest.raises(ValueError, match="extra_rounds"):
        TrainConfig(extra_rounds=-1)
    with pytest.raises(ValueError, match="iterations >= 2"):
        TrainConfig(extra_rounds=2, iterations=1)
