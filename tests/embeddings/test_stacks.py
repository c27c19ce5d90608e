"""Stacks of any layout: 2D, RGB, (Z, Y, X), (T, Z, Y, X), channel axes, dask and zarr, lazily."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_sam.embeddings import EmbeddingCache, StackIndexError
from napari_sam.predictor import Predictor
from napari_sam.preprocess import ImageError


def test_cache_embedding_equals_the_predictor_on_the_same_plane(model, encoder) -> None:
    stack = np.random.default_rng(0).normal(100, 20, (4, 50, 70)).astype(np.float32)
    view = EmbeddingCache(model).view(stack)
    p = Predictor(model)
    p.set_image(stack[2], norm=view.norm)
    cached = view.get(2)
    assert torch.allclose(cached.features, p.embedding.features, atol=1e-6)
    assert cached.original_size == p.embedding.original_size and cached.input_size == p.embedding.input_size


def test_normalisation_is_one_for_the_whole_stack(model) -> None:
    stack = np.zeros((20, 32, 32), dtype=np.uint16)
    stack += (np.arange(20, dtype=np.uint16) * 100)[:, None, None]  # dim early slices, bright late
    stack[:, ::2, ::2] += 7
    view = EmbeddingCache(model).view(stack)
    assert view.norm.low < 200 and view.norm.high > 1700  # percentiles over sampled planes


@pytest.mark.parametrize(
    ("shape", "channel_axis", "index_shape", "plane"),
    [
        ((30, 40), None, (), (30, 40)),
        ((30, 40, 3), None, (), (30, 40, 3)),
        ((30, 40, 4), None, (), (30, 40, 3)),  # RGBA: alpha dropped
        ((3, 30, 40), None, (3,), (30, 40)),
        ((2, 3, 30, 40), None, (2, 3), (30, 40)),
        ((3, 30, 40), 0, (), (30, 40, 3)),  # channels first
        ((5, 3, 30, 40), 1, (5,), (30, 40, 3)),
        ((5, 1, 30, 40), 1, (5,), (30, 40, 1)),
    ],
)
def test_layouts(model, shape, channel_axis, index_shape, plane) -> None:
    data = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    view = EmbeddingCache(model).view(data, channel_axis=channel_axis)
    assert view.index_shape == index_shape and view.plane_shape == (30, 40)
    last = tuple(s - 1 for s in index_shape)
    assert view.plane(last).shape == plane
    emb = view.get(last)
    assert emb.original_size == (30, 40)


def test_uint8_rgb_is_passed_through(model) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (2, 30, 40, 3)).astype(np.uint8)
    assert EmbeddingCache(model).view(rgb).norm.passthrough


def test_bad_stacks_and_indices_are_clear_errors(model) -> None:
    cache = EmbeddingCache(model)
    with pytest.raises(ImageError, match="channels"):
        cache.view(np.zeros((5, 30, 40)), channel_axis=0)
    with pytest.raises(ImageError, match="spatial"):
        cache.view(np.zeros(30))
    with pytest.raises(ImageError, match="dtype"):
        cache.view(np.zeros((30, 40), dtype=complex))
    view = cache.view(np.zeros((2, 3, 30, 40), dtype=np.uint8))
    with pytest.raises(StackIndexError, match="2 leading dimensions"):
        view.get(1)
    with pytest.raises(StackIndexError, match="outside"):
        view.get((2, 0))
    with pytest.raises(ValueError, match="integers"):
        view.get((0, 1.5))
    assert view.get((-1, 2.0)).original_size == (30, 40)  # negative and float-integer indices work
    with pytest.raises(TypeError, match="model"):
        EmbeddingCache("vit_b")  # type: ignore[arg-type]


def test_dask_stack_larger_than_the_budget_is_read_one_plane_at_a_time(model, encoder, tmp_path) -> None:
    z, y, x = 12, 256, 256
    reads: list[int] = []

    def plane(block_id: tuple[int, ...] = (0, 0, 0)) -> np.ndarray:
        reads.append(block_id[0])
        return np.random.default_rng(block_id[0]).integers(0, 4000, (1, y, x)).astype(np.uint16)

    stack = da.map_blocks(plane, chunks=((1,) * z, (y,), (x,)), dtype=np.uint16)
    emb_bytes = 64 * 16 * 16 * 4
    budget = 3 * emb_bytes
    assert stack.nbytes > budget
    cache = EmbeddingCache(model, memory_budget=budget, directory=tmp_path)
    view = cache.view(stack)
    reads.clear()  # the normalisation sampled some planes; from here on count plane reads
    view.get(7)
    assert reads == [7]
    view.precompute()  # slice 7 is on disk by now: skipped
    assert encoder.images == z and cache.memory_bytes <= budget
    assert sorted(set(reads)) == list(range(z)) and len(reads) == z  # each plane read once
    # the same pixels as numpy hit the same entries (content signature, not object identity)
    numpy_view = cache.view(stack.compute(), norm=view.norm)
    numpy_view.get(z - 1)
    assert encoder.images == z


def test_zarr_stack(model, encoder, tmp_path) -> None:
    data = np.random.default_rng(2).integers(0, 4000, (4, 40, 50)).astype(np.uint16)
    arr = zarr.create_array(str(tmp_path / "img.zarr"), shape=data.shape, chunks=(1, 40, 50), dtype="uint16")
    arr[:] = data
    cache = EmbeddingCache(model)
    from_zarr = cache.view(zarr.open_array(str(tmp_path / "img.zarr"), mode="r"))
    from_numpy = cache.view(data)
    assert from_zarr.norm == from_numpy.norm
    from_zarr.precompute()
    assert all(from_numpy.is_cached(z) for z in range(4)) and encoder.images == 4
