"""Reading checkpoints in every wrapping we accept, load_model from files, and each error case.

The model is a tiny SAM built by the real builder from a reduced config (64 px input,
2 ViT blocks, 32 channels), so every file here is a few hundred kB.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from napari_sam import _checkpoint, _download, weights
from napari_sam._checkpoint import (
    ArchitectureMismatchError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWarning,
    CorruptCheckpointError,
    EmptyCheckpointError,
    NotACheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_checkpoint,
)
from napari_sam.model import ArchitectureError, SamConfig, build_sam
from napari_sam.weights import ChecksumError, UnknownModelError, load_model

TINY = SamConfig(
    img_size=64, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2,
    prompt_embed_dim=32, mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(_download, "_memo", {})
    weights.clear_model_cache()


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_sam(TINY).state_dict()


def _save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path


class _Head:  # a class torch's safe loader does not allow
    pass


WRAPPINGS: dict[str, Callable[[dict[str, torch.Tensor]], Any]] = {
    "plain": lambda sd: sd,
    "model": lambda sd: {"model": sd, "epoch": 3},
    "model_state (micro-sam)": lambda sd: {
        "model_state": {"sam." + k: v for k, v in sd.items()},
        "iteration": 10,
        "optimizer_state": {"state": {}, "param_groups": []},
    },
    "state_dict with module.": lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    "nested sam": lambda sd: {"model": {"sam": sd}},
    "torch.compile prefix": lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},
}


@pytest.mark.parametrize("wrapping", list(WRAPPINGS))
def test_read_checkpoint_unwraps(
    wrapping: str, state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = _save(WRAPPINGS[wrapping](state), tmp_path / "ckpt.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these layouts drops anything
        loaded = read_checkpoint(path)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("wrapping", ["plain", "model_state (micro-sam)"])
def test_load_model_from_file(wrapping: str, state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = _save(WRAPPINGS[wrapping](state), tmp_path / "finetuned.pt")
    model = load_model(path, device="cpu", precision="fp32")
    assert not model.training
    assert model.config == TINY
    assert model.name == "finetuned"
    assert model.weights_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.precision == "fp32"
    assert model.device == torch.device("cpu")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert load_model(str(path), device="cpu", precision="bf16").precision == "bf16"


def test_extra_heads_are_dropped_with_a_warning(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model_state = {"sam." + k: v for k, v in state.items()}
    model_state["decoder.head.weight"] = torch.zeros(3)
    model_state["sam.pixel_mean"] = torch.zeros(3, 1, 1)  # a constant: dropped silently
    path = _save({"model_state": model_state, "decoder_state": {"x": torch.ones(1)}}, tmp_path / "m.pt")
    with pytest.warns(CheckpointWarning, match="decoder.head.weight"):
        contents = load_checkpoint(path)
    assert set(contents.state_dict) == set(state)
    assert contents.dropped == ["decoder.head.weight"]
    with pytest.warns(CheckpointWarning):
        assert load_model(path, device="cpu").config == TINY


def test_stored_config_supplies_sizes_shapes_cannot_tell(
    state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    config = SamConfig(**{**TINY.to_dict(), "decoder_heads": 4})
    path = _save({"model": state, "config": config.to_dict()}, tmp_path / "c.pt")
    assert load_checkpoint(path).config == config.to_dict()
    assert load_model(path, device="cpu").config.decoder_heads == 4


def test_loading_the_same_file_again_reuses_the_parsed_checkpoint(
    state: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(state, tmp_path / "m.pt")
    calls = []
    real_load = torch.load
    monkeypatch.setattr(_checkpoint.torch, "load", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    first = load_model(path, device="cpu")
    second = load_model(path, device="cpu")
    assert len(calls) == 1
    assert second is not first
    assert second.weights_hash == first.weights_hash
    _save({k: v + 1 for k, v in state.items()}, path)  # rewritten file: read again
    third = load_model(path, device="cpu")
    assert len(calls) == 2 and third.weights_hash != first.weights_hash


# --- errors ---------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointNotFoundError, match="nope.pt"):
        read_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match="list_models|registered"):
        load_model(missing)
    with pytest.raises(CheckpointNotFoundError, match="folder"):
        read_checkpoint(tmp_path)


def test_unknown_model_name() -> None:
    with pytest.raises(UnknownModelError, match="vit_b"):
        load_model("vit_q")


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"hello, these are not weights\n", "text file"),
        (b"II*\x00" + bytes(200), "TIFF"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "HDF5"),
        (bytes(range(128, 256)) * 2, "not a PyTorch"),
        (bytes(range(256)), "not a PyTorch"),
    ],
)
def test_not_a_checkpoint(content: bytes, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "image.pt"
    path.write_bytes(content)
    with pytest.raises(NotACheckpointError, match=kind) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert isinstance(info.value, ValueError)


def test_unsafe_pickle_is_refused(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = _save({"model": state, "head": _Head()}, tmp_path / "unsafe.pt")
    with pytest.raises(UnsafeCheckpointError, match="_Head") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "trust" in str(info.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(legacy: bool, state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(state, full, _use_new_zipfile_serialization=not legacy)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="again") as info:
        read_checkpoint(cut)
    assert str(cut) in str(info.value)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(CorruptCheckpointError, match="empty"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "obj",
    [{}, {"model": {}}, {"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, [torch.zeros(1)]],
    ids=["empty dict", "empty wrapped", "other network", "a list"],
)
def test_no_sam_weights(obj: Any, tmp_path: Path) -> None:
    path = _save(obj, tmp_path / "other.pt")
    with pytest.raises(EmptyCheckpointError, match="no SAM weights") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_keys_are_named(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    partial = {k: v for k, v in state.items() if not k.startswith("mask_decoder.iou_prediction_head")}
    path = _save(partial, tmp_path / "partial.pt")
    with pytest.raises(ArchitectureMismatchError, match="iou_prediction_head") as info:
        load_model(path, device="cpu")
    assert str(path) in str(info.value)
    assert isinstance(info.value, ArchitectureError) and isinstance(info.value, CheckpointError)


def test_shape_mismatch_is_named(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    bad = dict(state)
    bad["mask_decoder.output_upscaling.0.bias"] = torch.zeros(5)
    path = _save(bad, tmp_path / "bad.pt")
    with pytest.raises(ArchitectureMismatchError, match="output_upscaling.0.bias"):
        load_model(path, device="cpu")


def test_unexpected_keys_are_named(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    extra = dict(state)
    extra["mask_decoder.adapter.weight"] = torch.zeros(2)
    path = _save(extra, tmp_path / "extra.pt")
    with pytest.raises(ArchitectureMismatchError, match="adapter.weight"):
        load_model(path, device="cpu")


# --- the shipped default --------------------------------------------------------------------

def test_default_model_is_tiny_synth(
    state: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "weights_data"
    shipped.mkdir()
    monkeypatch.setattr(weights, "SHIPPED_DIR", shipped)
    with pytest.raises(FileNotFoundError, match="tiny_synth.pt"):
        load_model()
    path = _save({"model": state, "config": TINY.to_dict()}, shipped / "tiny_synth.pt")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights.write_sha256_sidecar(path) == digest
    assert (shipped / "tiny_synth.sha256").read_text().split() == [digest, "tiny_synth.pt"]
    info = weights.list_models()[0]
    assert info.name == "tiny-synth" and info.is_cached and info.url is None
    assert info.sha256 == digest and info.size_bytes == path.stat().st_size
    model = load_model(device="cpu")
    assert model.name == "tiny-synth" and model.weights_hash == digest
    (shipped / "tiny_synth.sha256").write_text("0" * 64)
    weights.clear_model_cache()
    with pytest.raises(ChecksumError, match="tiny_synth.sha256"):
        load_model(device="cpu")
