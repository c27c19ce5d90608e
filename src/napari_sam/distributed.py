"""Scale-out: the per-slice work of a stack as Dask tasks, locally or on a cluster.

Two jobs run slice by slice:

* :func:`embed_stack` computes every slice's image embedding into a shared embedding cache
  folder (the one :class:`napari_sam.EmbeddingCache` reads), optionally exported to one zarr store;
* :func:`segment_everything_stack` segments everything on every slice, then links object IDs
  through z and writes one label file (TIFF or zarr) with its provenance record.

Where the tasks run (``scheduler``):

* ``None`` or ``"threads"``: Dask's local thread pool (``workers`` threads, default 1);
* ``"processes"``: a local ``dask.distributed`` cluster of ``workers`` processes on 127.0.0.1;
* ``"tcp://host:port"``: the scheduler of a running Dask cluster;
* a ``dask.distributed.Client``.

Each task receives the input path and the model name (never the pixels or the weights): a worker
loads the model once per process, reads its own planes from the TIFF / zarr input and writes its
results to files, so a volume larger than memory flows through one plane at a time. On a cluster
the input, the cache folder and the output must be on a file system every worker sees.

A killed run resumes: finished embeddings are in the cache folder, and every segmented slice is
recorded by a done-marker in ``<out>.partial/`` (kept until the result is written), so running the
same command again computes only what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam.io import check_writable, combine_signature, open_stack, plane_digest, provenance, write_labels

__all__ = ["RunCancelled", "StackRun", "embed_stack", "segment_everything_stack"]

Progress = Callable[[int, int], None]
_LOCK = threading.Lock()
_MODELS: dict[tuple[Any, ...], Any] = {}
_WORKER: dict[tuple[Any, ...], Any] = {}  # Segmenters and stack views, per job


class RunCancelled(RuntimeError):
    """The run was cancelled; finished work is kept and a rerun resumes from it."""


@dataclass
class StackRun:
    """What a run did.

    Attributes
    ----------
    path : Path or None
        The output (labels file, or the embedding cache folder / exported store).
    planes : int
        Slices in the input.
    computed : int
        Slices computed by this run.
    reused : int
        Slices found done (cached embeddings, or segmented slices of an interrupted run).
    objects : int
        Objects in the labels (segment everything), else 0.
    signature : str
        The input's content signature (segment everything), else "".
    """

    path: Path | None
    planes: int
    computed: int
    reused: int
    objects: int = 0
    signature: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, small and picklable: paths and names, no arrays or weights."""

    source: str
    key: Any
    channel: int | None
    model: str | None
    device: str | None
    precision: str | None
    cache_dir: str | None
    memory_budget: str


# -- worker side -----------------------------------------------------------------------------------
def _model(job: _Job) -> Any:
    from napari_sam.weights import load_model

    key = (job.model, job.device, job.precision)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(job.model, device=job.device, precision=job.precision)
        return _MODELS[key]


def _segmenter(job: _Job) -> Any:
    """One Segmenter per job and process: the model, cache and stack view are reused by tasks."""
    return _worker_object(job, "segmenter")


def _view(job: _Job) -> Any:
    """One StackEmbeddings per job and process."""
    return _worker_object(job, "view")


def _worker_object(job: _Job, kind: str) -> Any:
    from napari_sam.embeddings import EmbeddingCache

    key = (kind, *_key(job))
    with _LOCK:
        obj = _WORKER.get(key)
    if obj is None:
        model = _model(job)
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


def _key(job: _Job) -> tuple[Any, ...]:
    stat = os.stat(job.source)
    return (job, stat.st_mtime_ns, stat.st_size)


def _channel_axis(image: Any) -> int | None:
    return image.data.ndim - 1 if "C" in image.axes else None


def _check(cancel: Any) -> None:
    from napari_sam.segment._util import is_cancelled

    if is_cancelled(cancel):
        raise RunCancelled("cancelled")


def _embed_task(job: _Job, index: tuple[int, ...], cancel: Any = None) -> bool:
    """Embed one slice into the cache; True if computed, False if it was cached already."""
    _check(cancel)
    return _view(job).precompute([index]) > 0


def _marker(work: Path, index: tuple[int, ...]) -> Path:
    return work / "done" / ("_".join(map(str, index)) or "plane")


def _everything_task(job: _Job, params: dict[str, Any], work: str, index: tuple[int, ...],
                     cancel: Any = None) -> dict[str, Any]:
    """Segment everything on one slice into ``<work>/raw.zarr``; resumable via a done-marker."""
    import zarr

    marker = _marker(Path(work), index)
    if marker.is_file():
        return {**json.loads(marker.read_text()), "reused": True}
    _check(cancel)
    seg = _segmenter(job)
    labels = seg.segment_everything(index=index, **params)
    raw = zarr.open_array(str(Path(work) / "raw.zarr"), mode="r+")
    raw[index] = labels
    digest = plane_digest(np.asarray(seg.embeddings.source.array[index]))
    info = {"index": list(index), "objects": int(labels.max()), "digest": digest.hex()}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, marker)
    return {**info, "reused": False}


# -- client side -----------------------------------------------------------------------------------
def _run(
    func: Callable[..., Any], calls: Sequence[tuple[Any, ...]], scheduler: Any, workers: int | None,
    progress: Progress | None, cancel: Any,
) -> list[Any]:
    """Run ``func(*args)`` for every args tuple as Dask tasks; results in call order."""
    total = len(calls)
    if progress is not None:
        progress(0, total)
    if scheduler in (None, "threads"):
        return _run_threads(func, calls, workers, progress, cancel)
    from distributed import Client, LocalCluster

    if scheduler == "processes":
        with LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
            return _run_client(client, func, calls, progress, cancel)
    if isinstance(scheduler, Client):
        return _run_client(scheduler, func, calls, progress, cancel)
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ValueError(
            f"scheduler {scheduler!r}: use 'threads', 'processes', an address like tcp://host:8786, "
            "or a dask.distributed.Client"
        )
    with Client(scheduler, timeout="30s") as client:
        return _run_client(client, func, calls, progress, cancel)


def _run_threads(func: Callable[..., Any], calls: Sequence[tuple[Any, ...]], workers: int | None,
                 progress: Progress | None, cancel: Any) -> list[Any]:
    import dask
    from dask.callbacks import Callback

    done = [0]
    tasks = [dask.delayed(func, pure=False)(*args, cancel) for args in calls]
    names = {t.key for t in tasks}

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in names:
            done[0] += 1
            if progress is not None:
                progress(done[0], len(calls))

    with Callback(posttask=posttask):
        return list(dask.compute(*tasks, scheduler="threads", num_workers=workers or 1))


def _run_client(client: Any, func: Callable[..., Any], calls: Sequence[tuple[Any, ...]],
                progress: Progress | None, cancel: Any) -> list[Any]:
    from distributed import as_completed

    from napari_sam.segment._util import is_cancelled

    futures = [client.submit(func, *args, pure=False) for args in calls]
    order = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    for done, future in enumerate(as_completed(futures), start=1):
        results[order[future.key]] = future.result()
        if progress is not None:
            progress(done, len(futures))
        if done < len(futures) and is_cancelled(cancel):
            client.cancel(futures)
            raise RunCancelled(f"cancelled after {done} of {len(futures)} slices")
    return results


def _prepare(stack: str | os.PathLike[str], model: Any, key: Any, channel: int | None,
             device: str | None, precision: str | None, cache_dir: Any, memory_budget: str) -> tuple[_Job, Any]:
    if not isinstance(model, (str, os.PathLike)) and model is not None:
        raise TypeError("model must be a registered name or a checkpoint path: workers load it themselves")
    image = open_stack(stack, key, channel)  # checks the input before any task starts
    if image.axes.replace("C", "") not in ("YX", "ZYX"):
        raise ValueError(f"{stack}: expected a 2D image or a 3D stack")
    model_ref = None if model is None else str(model)
    if model_ref is not None and Path(model_ref).expanduser().is_file():
        model_ref = str(Path(model_ref).expanduser().resolve())
    job = _Job(str(Path(stack).expanduser().resolve()), key, channel, model_ref, device, precision,
               None if cache_dir is None else str(Path(cache_dir).expanduser().resolve()), str(memory_budget))
    return job, image


def _indices(image: Any) -> list[tuple[int, ...]]:
    return [(z,) for z in range(image.shape[0])] if image.axes.startswith("Z") else [()]


def embed_stack(
    stack: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    export: str | os.PathLike[str] | None = None,
    key: Any = None,
    channel: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    memory_budget: str = "1 GB",
    scheduler: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: Any = None,
) -> StackRun:
    """Compute the embedding of every slice of a stack into an embedding cache folder.

    Parameters
    ----------
    stack
        TIFF / OME-TIFF / zarr path of a 2D image or a (Z, Y, X[, C]) stack.
    model
        Registry name or checkpoint path (default tiny-synth); each worker loads it once.
    cache_dir
        The embedding cache folder (default ``<napari-sam cache>/embeddings``); on a cluster a
        folder every worker can write.
    export
        Also write all embeddings into this zarr store (see ``StackEmbeddings.export_zarr``).
    key, channel
        What to read from the input (:func:`napari_sam.io.open_stack`).
    device, precision, memory_budget
        Model device and precision, and each worker's in-memory embedding budget.
    scheduler, workers
        Where the tasks run (see the module docstring).
    overwrite
        Replace an existing ``export`` store.
    progress, cancel
        ``progress(done, total)`` over slices; a cancel token (:class:`RunCancelled` is raised).

    Returns
    -------
    StackRun
        ``path`` is the cache folder (or the exported store).
    """
    from napari_sam.embeddings import default_directory

    cache_dir = default_directory() if cache_dir is None else cache_dir
    if export is not None:
        export = Path(export).expanduser()
        if export.exists() and not overwrite:
            raise FileExistsError(f"{export} exists; choose another name or pass --overwrite")
    job, image = _prepare(stack, model, key, channel, device, precision, cache_dir, memory_budget)
    indices = _indices(image)
    flags = _run(_embed_task, [(job, i) for i in indices], scheduler, workers, progress, cancel)
    run = StackRun(Path(str(job.cache_dir)), len(indices), sum(flags), len(flags) - sum(flags))
    if export is not None:
        if export.exists():
            shutil.rmtree(export)
        _view(job).export_zarr(export, cancel=cancel)
        run.path = export
    return run


def _work_dir(out: Path, run_key: dict[str, Any], overwrite: bool) -> Path:
    work = out.with_name(out.name + ".partial")
    record = work / "run.json"
    if work.exists():
        previous = json.loads(record.read_text()) if record.is_file() else None
        if previous == run_key:
            return work
        if not overwrite:
            raise FileExistsError(
                f"{work} holds an unfinished run with other settings; delete it, or pass "
                "--overwrite to start again"
            )
        shutil.rmtree(work)
    (work / "done").mkdir(parents=True)
    record.write_text(json.dumps(run_key))
    return work


def _link(raw: Any, dest: Any, min_iou: float, link: bool) -> int:
    """Relabel per-slice IDs plane by plane into ``dest``: objects keep one ID through z.

    Same result as :func:`napari_sam.segment.linking.link_slices`, with two planes in memory.
    Returns the number of objects.
    """
    from napari_sam.segment.linking import match_labels

    if raw.ndim == 2:
        plane = np.asarray(raw[...])
        dest[...] = plane
        return len(np.unique(plane[plane > 0]))
    previous, next_id = None, 1
    for z in range(raw.shape[0]):
        plane = np.asarray(raw[z])
        links = match_labels(previous, plane, min_iou) if (link and previous is not None) else {}
        ids = np.unique(plane)
        ids = ids[ids > 0]
        lut = np.zeros(len(ids) + 1, dtype=np.uint32)
        for i, local in enumerate(ids.tolist(), start=1):
            if local in links:
                lut[i] = links[local]
            else:
                lut[i], next_id = next_id, next_id + 1
        out = lut[np.where(plane > 0, np.searchsorted(ids, plane) + 1, 0)]
        dest[z] = out
        previous = out
    return next_id - 1


def segment_everything_stack(
    stack: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    link: bool = True,
    link_iou: float = 0.25,
    cache_dir: str | os.PathLike[str] | None = None,
    key: Any = None,
    channel: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    memory_budget: str = "1 GB",
    scheduler: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: Any = None,
) -> StackRun:
    """Segment everything on every slice of a stack and write linked instance labels.

    Parameters
    ----------
    stack, model, key, channel, device, precision, memory_budget, scheduler, workers
        As for :func:`embed_stack`.
    out
        ``*.tif`` or ``*.zarr`` labels, (Y, X) or (Z, Y, X) uint32, with the provenance record.
    params
        Keyword arguments of :meth:`napari_sam.Segmenter.segment_everything` for one slice
        (points_per_side, pred_iou_thresh, min_mask_region_area, ...).
    link, link_iou
        Give an object one ID through z when it overlaps (IoU >= link_iou) on neighbouring slices;
        ``link=False``: every slice's objects get new IDs.
    cache_dir
        Embedding cache folder; None keeps embeddings in each worker's memory only.
    overwrite
        Replace an existing output (and discard an unfinished run with other settings).
    progress, cancel
        ``progress(done, total)`` over slices; a cancel token (:class:`RunCancelled`).

    Returns
    -------
    StackRun
    """
    import zarr

    out = check_writable(out, overwrite)
    params = dict(params or {})
    job, image = _prepare(stack, model, key, channel, device, precision, cache_dir, memory_budget)
    indices = _indices(image)
    spatial = tuple(image.shape[: 1 + 2] if indices[0] else image.shape[:2])
    run_key = json.loads(json.dumps({"job": job.__dict__, "params": params, "shape": list(image.shape),
                                     "dtype": str(image.data.dtype)}, default=str))
    work = _work_dir(out, run_key, overwrite)
    raw_path = work / "raw.zarr"
    if not raw_path.exists():
        chunks = (1,) * (len(spatial) - 2) + spatial[-2:]
        zarr.open_array(str(raw_path), mode="w", shape=spatial, chunks=chunks, dtype="uint32")
    infos = _run(_everything_task, [(job, params, str(work), i) for i in indices], scheduler, workers,
                 progress, cancel)
    signature = combine_signature(image.shape, image.data.dtype, [bytes.fromhex(i["digest"]) for i in infos])
    raw = zarr.open_array(str(raw_path), mode="r")
    linked_path = work / "linked.zarr"
    linked = zarr.open_array(str(linked_path), mode="w", shape=raw.shape, chunks=raw.chunks, dtype="uint32")
    objects = _link(raw, linked, link_iou, link)
    record = provenance(
        job.model or "tiny-synth",
        {"command": "auto", "segment_everything": params, "link": link, "link_iou": link_iou,
         "key": key, "channel": channel},
        stack, signature,
    )
    record["model"] = _model_record(job)
    write_labels(out, linked, None, record, overwrite=overwrite)
    shutil.rmtree(work)
    reused = sum(bool(i["reused"]) for i in infos)
    return StackRun(out, len(indices), len(indices) - reused, reused, objects, signature)


def _model_record(job: _Job) -> dict[str, Any]:
    model = _model(job)
    return provenance(model, {}, None, None)["model"]
