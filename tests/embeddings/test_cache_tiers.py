"""Memory LRU, disk store, signatures: what is kept, what is recomputed, what survives damage."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam.embeddings import CacheWarning, EmbeddingCache
from napari_sam.embeddings._util import parse_bytes

EMB_BYTES = 64 * 16 * 16 * 4  # one float32 embedding of the test model


def _stack(z: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (z, 48, 64)).astype(np.uint16)


def _files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.emb"))


def test_parse_bytes_units_and_errors() -> None:
    assert parse_bytes("2 GB") == 2 * 10**9
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes(1000) == 1000
    assert parse_bytes("1.5 kb") == 1500
    for bad in ("lots", "-1 GB", "2 parsecs"):
        with pytest.raises(ValueError, match="budget"):
            parse_bytes(bad)
    with pytest.raises(TypeError):
        parse_bytes([1])  # type: ignore[arg-type]


def test_memory_lru_stays_within_budget_and_keeps_recent(model, encoder) -> None:
    cache = EmbeddingCache(model, memory_budget=int(2.5 * EMB_BYTES))
    view = cache.view(_stack())
    for z in range(6):
        view.get(z)
        assert cache.memory_bytes <= 2.5 * EMB_BYTES
    assert encoder.images == 6 and len(cache.memory) == 2
    view.get(5)  # most recent: still in memory
    assert encoder.images == 6
    view.get(0)  # dropped long ago: recomputed
    assert encoder.images == 7


def test_memory_is_shared_between_views_of_the_same_data(model, encoder) -> None:
    cache = EmbeddingCache(model)
    stack = _stack()
    first = cache.view(stack).get(2)
    second = cache.view(stack.copy()).get(2)
    assert encoder.images == 1
    assert torch.equal(first.features, second.features)


def test_disk_tier_survives_a_new_cache_without_recomputing(model, encoder, tmp_path) -> None:
    stack = _stack()
    original = [EmbeddingCache(model, directory=tmp_path).view(stack).get(z) for z in range(3)]
    assert encoder.images == 3 and len(_files(tmp_path)) == 3
    fresh = EmbeddingCache(model, directory=tmp_path).view(stack)
    for z in range(3):
        again = fresh.get(z)
        assert torch.equal(again.features, original[z].features)
        assert again.original_size == (48, 64) and again.input_size == original[z].input_size
    assert encoder.images == 3 and fresh.cache.stats.disk_hits == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_file_is_detected_and_recomputed(model, encoder, tmp_path, damage) -> None:
    stack = _stack()
    good = EmbeddingCache(model, directory=tmp_path).view(stack).get(1)
    (path,) = _files(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # damage is repaired quietly (logged), not warned about
        cache = EmbeddingCache(model, directory=tmp_path)
        again = cache.view(stack).get(1)
    assert encoder.images == 2 and cache.disk is not None and cache.disk.corrupt_found == 1
    assert torch.allclose(again.features, good.features, atol=1e-5)
    assert EmbeddingCache(model, directory=tmp_path).view(stack).get(1) is not None
    assert encoder.images == 2  # the repaired file is used


def test_changed_pixel_recomputes_only_that_slice(model, encoder, tmp_path) -> None:
    stack = _stack()
    view = EmbeddingCache(model, memory_budget="10 MB", directory=tmp_path).view(stack)
    before = [view.get(z) for z in range(6)]
    stack[3, 10, 10] = (int(stack[3, 10, 10]) + 2000) % 4000  # one pixel edited in place
    after = [view.get(z) for z in range(6)]
    assert encoder.images == 7
    assert not torch.equal(after[3].features, before[3].features)
    assert all(torch.equal(after[z].features, before[z].features) for z in (0, 1, 2, 4, 5))
    fresh = EmbeddingCache(model, directory=tmp_path).view(stack, norm=view.norm)
    assert all(fresh.is_cached(z) for z in range(6))  # both versions of slice 3 are on disk


def test_other_model_or_normalisation_never_reuses_embeddings(model, encoder, tmp_path) -> None:
    from emb_helpers import make_model

    stack = _stack()
    EmbeddingCache(model, directory=tmp_path).view(stack).get(0)
    other = EmbeddingCache(make_model(1), directory=tmp_path).view(stack)
    assert not other.is_cached(0)
    view = EmbeddingCache(model, directory=tmp_path).view(stack)
    assert view.is_cached(0)
    shifted = EmbeddingCache(model, directory=tmp_path).view(
        stack, norm=type(view.norm)(view.norm.low + 1, view.norm.high)
    )
    assert not shifted.is_cached(0)
    model.weights_hash = "abc"
    try:
        assert not view.is_cached(0)  # the same view notices the new weights
        assert not EmbeddingCache(model, directory=tmp_path).view(stack).is_cached(0)
    finally:
        model.weights_hash = ""


def test_disk_budget_evicts_least_recently_used(model, encoder, tmp_path) -> None:
    cache = EmbeddingCache(model, memory_budget=0, directory=tmp_path, disk_budget=int(3.5 * (EMB_BYTES + 512)))
    view = cache.view(_stack())
    for z in range(6):
        view.get(z)
    assert cache.disk is not None
    assert cache.disk.total_bytes() <= 3.5 * (EMB_BYTES + 512)
    assert view.is_cached(5) and not view.is_cached(0)


def test_full_disk_warns_once_and_keeps_working_in_memory(model, encoder, tmp_path, monkeypatch) -> None:
    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    cache = EmbeddingCache(model, directory=tmp_path)
    view = cache.view(_stack())
    with pytest.warns(CacheWarning, match="disk is full"):
        first = view.get(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        view.get(1)
        again = view.get(0)
    assert encoder.images == 2 and torch.equal(first.features, again.features)
    assert not list(tmp_path.rglob("*.emb")) and not list(tmp_path.rglob("*.tmp"))


def test_half_precision_halves_memory_and_returns_float32(model, encoder) -> None:
    stack = _stack()
    full = EmbeddingCache(model).view(stack)
    half = EmbeddingCache(model, half_precision=True).view(stack)
    a, b = full.get(0), half.get(0)
    assert b.features.dtype == torch.float32
    assert half.cache.memory_bytes * 2 == full.cache.memory_bytes
    assert torch.allclose(a.features, b.features, rtol=1e-2, atol=1e-3)


def test_weights_changed_in_place_need_a_refreshed_key(encoder) -> None:
    from emb_helpers import make_model

    tuned = make_model(3)
    cache = EmbeddingCache(tuned)
    view = cache.view(_stack())
    view.get(0)
    with torch.no_grad():
        tuned.image_encoder.patch_embed.proj.weight.mul_(1.1)  # fine-tuning in place
    cache.refresh_model_key()
    assert not view.is_cached(0)


def test_cache_folder_removed_while_running_is_recreated(model, encoder, tmp_path) -> None:
    import shutil

    cache = EmbeddingCache(model, directory=tmp_path / "cache")
    view = cache.view(_stack())
    view.get(0)
    shutil.rmtree(tmp_path / "cache")  # the user cleared the cache folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        view.get(1)
    assert len(_files(tmp_path / "cache")) == 1
