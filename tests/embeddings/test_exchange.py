"""Export a stack's embeddings to zarr and use them elsewhere; refuse them for another image."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_sam.embeddings import EmbeddingCache, EmbeddingMismatchError


def _stack() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 4000, (5, 40, 56)).astype(np.uint16)


@pytest.fixture
def exported(model, tmp_path):
    stack = _stack()
    view = EmbeddingCache(model).view(stack)
    calls: list[tuple[int, int]] = []
    assert view.export_zarr(tmp_path / "emb.zarr", progress=lambda d, t: calls.append((d, t))) == 5
    assert calls[-1] == (5, 5)
    return stack, [view.get(z).features for z in range(5)], tmp_path / "emb.zarr"


def test_round_trip_needs_no_encoder(model, encoder, exported) -> None:
    stack, features, path = exported
    encoder.images = 0
    view = EmbeddingCache(model, memory_budget="1 MB").view(stack.copy())  # "the laptop"
    assert view.import_zarr(path) == 5
    assert all(view.is_cached(z) for z in range(5))
    for z in range(5):
        assert torch.equal(view.get(z).features, features[z])
    view.predictor(2, points=[[10, 10]])[0].predict(points=[[10, 10]])
    assert encoder.images == 0


def test_imported_embeddings_are_persisted_in_the_disk_cache(model, encoder, exported, tmp_path) -> None:
    stack, _, path = exported
    encoder.images = 0
    view = EmbeddingCache(model, directory=tmp_path / "cache").view(stack)
    view.import_zarr(path)
    view.precompute()  # nothing to compute: everything is in the store
    for z in range(5):
        view.get(z)
    later = EmbeddingCache(model, directory=tmp_path / "cache").view(stack)
    assert all(later.is_cached(z) for z in range(5)) and encoder.images == 0


def test_store_for_another_image_is_refused(model, exported) -> None:
    stack, _, path = exported
    changed = stack.copy()
    changed[3, 5, 5] += 1
    view = EmbeddingCache(model).view(changed, norm=EmbeddingCache(model).view(stack).norm)
    with pytest.raises(EmbeddingMismatchError, match=r"different image: 1 of 5 planes differ \(first: plane \(3,\)\)"):
        view.import_zarr(path)
    with pytest.raises(EmbeddingMismatchError, match="shape"):
        EmbeddingCache(model).view(stack[:4]).import_zarr(path)


def test_store_for_another_model_or_normalisation_is_refused(model, exported) -> None:
    from emb_helpers import make_model

    stack, _, path = exported
    with pytest.raises(EmbeddingMismatchError, match="different model"):
        EmbeddingCache(make_model(2)).view(stack).import_zarr(path)
    view = EmbeddingCache(model).view(stack)
    with pytest.raises(EmbeddingMismatchError, match="normalisation"):
        EmbeddingCache(model).view(stack, norm=type(view.norm)(0.0, 1.0)).import_zarr(path)
    with pytest.raises(EmbeddingMismatchError, match="half_precision"):
        EmbeddingCache(model, half_precision=True).view(stack).import_zarr(path)


def test_export_never_overwrites_other_data_and_import_needs_a_store(model, tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "keep.tif").write_bytes(b"data")
    view = EmbeddingCache(model).view(_stack())
    with pytest.raises(ValueError, match="not a napari-sam embeddings store"):
        view.export_zarr(tmp_path / "images")
    assert (tmp_path / "images" / "keep.tif").exists()
    with pytest.raises(FileNotFoundError):
        view.import_zarr(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="not"):
        view.import_zarr(tmp_path / "images")


def test_cancelled_export_records_what_is_missing(model, encoder, tmp_path) -> None:
    stack = _stack()
    stop = threading.Event()
    view = EmbeddingCache(model).view(stack)
    written = view.export_zarr(
        tmp_path / "part.zarr", progress=lambda d, t: stop.set() if d == 2 else None, cancel=stop
    )
    assert written == 2
    encoder.images = 0
    laptop = EmbeddingCache(model).view(stack)
    assert laptop.import_zarr(tmp_path / "part.zarr") == 2
    assert [laptop.is_cached(z) for z in range(5)] == [True, True, False, False, False]
    assert laptop.precompute() == 3 and encoder.images == 3
