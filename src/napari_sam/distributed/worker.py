"""The worker side: tasks that process one slice, and what a worker process keeps between tasks.

A task receives a :class:`Job` (paths and names only); the model, the embedding cache and the
stack view are made once per worker process and job, and reused by its later tasks.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_sam.io import open_stack, plane_digest

__all__ = [
    "Job",
    "RunCancelled",
    "embed_task",
    "everything_task",
    "load_cached_model",
    "marker_path",
    "stack_view",
]

_LOCK = threading.Lock()
_MODELS: dict[tuple[Any, ...], Any] = {}
_WORKER: dict[tuple[Any, ...], Any] = {}  # Segmenters and stack views, per job


class RunCancelled(RuntimeError):
    """The run was cancelled; finished work is kept and a rerun resumes from it."""


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, small and picklable: paths and names, no arrays or weights."""

    source: str
    key: Any
    channel: int | None
    model: str | None
    device: str | None
    precision: str | None
    cache_dir: str | None
    memory_budget: str


def load_cached_model(job: Job) -> Any:
    """The job's model, loaded once per process (and device / precision)."""
    from napari_sam.weights import load_model

    key = (job.model, job.device, job.precision)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(job.model, device=job.device, precision=job.precision)
        return _MODELS[key]


def _segmenter(job: Job) -> Any:
    """One Segmenter per job and process: the model, cache and stack view are reused by tasks."""
    return _worker_object(job, "segmenter")


def stack_view(job: Job) -> Any:
    """One StackEmbeddings per job and process."""
    return _worker_object(job, "view")


def _worker_object(job: Job, kind: str) -> Any:
    from napari_sam.embeddings import EmbeddingCache

    key = (kind, *_key(job))
    with _LOCK:
        obj = _WORKER.get(key)
    if obj is None:
        model = load_cached_model(job)
        image = open_stack(job.source, job.key, job.channel)
        cache = EmbeddingCache(model, memory_budget=job.memory_budget, directory=job.cache_dir)
        if kind == "view":
            obj = cache.view(image.data, channel_axis=_channel_axis(image))
        else:
            from napari_sam.segment import Segmenter

            obj = Segmenter(model, image.data, cache=cache, channel_axis=_channel_axis(image))
        with _LOCK:
            obj = _WORKER.setdefault(key, obj)
    return obj


def _key(job: Job) -> tuple[Any, ...]:
    stat = os.stat(job.source)
    return (job, stat.st_mtime_ns, stat.st_size)


def _channel_axis(image: Any) -> int | None:
    return image.data.ndim - 1 if "C" in image.axes else None


def _check(cancel: Any) -> None:
    from napari_sam.segment._util import is_cancelled

    if is_cancelled(cancel):
        raise RunCancelled("cancelled")


def embed_task(job: Job, index: tuple[int, ...], cancel: Any = None) -> bool:
    """Embed one slice into the cache; True if computed, False if it was cached already."""
    _check(cancel)
    return stack_view(job).precompute([index]) > 0


def marker_path(work: Path, index: tuple[int, ...]) -> Path:
    """The done-marker of one slice in a run's work folder."""
    return work / "done" / ("_".join(map(str, index)) or "plane")


def everything_task(
    job: Job, params: dict[str, Any], work: str, index: tuple[int, ...], cancel: Any = None
) -> dict[str, Any]:
    """Segment everything on one slice into ``<work>/raw.zarr``; resumable via a done-marker."""
    import zarr

    marker = marker_path(Path(work), index)
    if marker.is_file():
        return {**json.loads(marker.read_text()), "reused": True}
    _check(cancel)
    seg = _segmenter(job)
    labels = seg.segment_everything(index=index, **params)
    raw = zarr.open_array(str(Path(work) / "raw.zarr"), mode="r+")
    raw[index] = labels
    digest = plane_digest(seg.embeddings.plane(index))  # the plane as stored, for the signature
    info = {"index": list(index), "objects": int(labels.max()), "digest": digest.hex()}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, marker)
    return {**info, "reused": False}
