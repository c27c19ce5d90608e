"""Precompute order, resume and cancel; background prefetch; one computation per slice."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from napari_sam.embeddings import EmbeddingCache


def _stack(z: int = 7) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 1000, (z, 40, 48)).astype(np.int32)


def _record_inputs(view) -> list[tuple[int, ...]]:
    """Plane indices in the order the view prepares them for the encoder."""
    order: list[tuple[int, ...]] = []
    original = view._input

    def recording(index, tile, pixels):
        order.append(index)
        return original(index, tile, pixels)

    view._input = recording
    return order


def test_precompute_starts_at_a_slice_and_moves_outwards(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    order = _record_inputs(view)
    calls: list[tuple[int, int]] = []
    assert view.precompute(start=3, progress=lambda done, total: calls.append((done, total))) == 7
    assert [i[0] for i in order] == [3, 4, 2, 5, 1, 6, 0]
    assert calls[0] == (0, 7) and calls[-1] == (7, 7)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_precompute_batches_and_skips_cached(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    view.get(2)
    assert view.precompute(batch_size=3) == 6
    assert encoder.sizes == [1, 3, 3]  # one get, then two batched encoder calls
    assert view.precompute() == 0 and encoder.images == 7


def test_cancelled_precompute_resumes_where_it_stopped(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 3:
            stop.set()

    assert view.precompute(start=0, progress=progress, cancel=stop) == 3
    assert [view.is_cached(z) for z in range(7)] == [True] * 3 + [False] * 4
    assert view.precompute(start=0) == 4
    assert encoder.images == 7


def test_cancel_from_another_thread_stops_within_one_slice(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    stop = threading.Event()
    original = model.encode

    def slow(x: torch.Tensor) -> torch.Tensor:
        if encoder.images == 2:  # the user presses cancel while slice 2 is being encoded
            threading.Timer(0.05, stop.set).start()
            time.sleep(0.2)
        return original(x)

    model.encode = slow
    try:
        computed = view.precompute(cancel=stop)
    finally:
        model.encode = original
    assert computed == 3 and encoder.images == 3  # the slice in progress finishes, no more


def test_cancel_tokens_of_every_kind(model, encoder) -> None:
    class Token:
        cancelled = True

    view = EmbeddingCache(model).view(_stack())
    assert view.precompute(cancel=Token()) == 0
    assert view.precompute(cancel=lambda: True) == 0
    assert encoder.images == 0


def test_prefetch_runs_in_the_background_and_never_computes_twice(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    view.get(0)
    order = _record_inputs(view)
    original = model.encode

    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.15)
        return original(x)

    model.encode = slow
    try:
        t0 = time.perf_counter()
        view.prefetch(2, radius=2)  # queues 2, 3, 1, 4, 0
        assert time.perf_counter() - t0 < 0.1
        t0 = time.perf_counter()
        view.get(0)  # cached: not held up by the busy worker
        assert time.perf_counter() - t0 < 0.1
        time.sleep(0.05)
        view.get(2)  # being computed in the background: waits for it
        view.get(3)
        assert view.wait_prefetch(timeout=10)
    finally:
        model.encode = original
        view.close()
    assert sorted(i[0] for i in order) == [1, 2, 3, 4]  # each once; 0 was cached
    assert encoder.images == 5


def test_threads_asking_for_the_same_slice_share_one_computation(model, encoder) -> None:
    view = EmbeddingCache(model).view(_stack())
    results = []
    threads = [threading.Thread(target=lambda: results.append(view.get(5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert encoder.images == 1
    assert all(torch.equal(r.features, results[0].features) for r in results)


def test_context_manager_stops_the_worker(model, encoder) -> None:
    with EmbeddingCache(model).view(_stack()) as view:
        view.prefetch(3, radius=1)
    assert view._prefetcher.idle
    assert not any(t.name == "napari-sam-prefetch" and t.is_alive() for t in threading.enumerate())
