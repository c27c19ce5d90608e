"""The scale-out jobs: embed a stack, segment everything in a stack (client side)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam.distributed.runner import run_tasks
from napari_sam.distributed.worker import Job, embed_task, everything_task, load_cached_model, stack_view
from napari_sam.io import check_writable, combine_signature, open_stack, provenance, write_labels

__all__ = ["StackRun", "embed_stack", "segment_everything_stack"]

Progress = Callable[[int, int], None]


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


def _prepare(stack: str | os.PathLike[str], model: Any, key: Any, channel: int | None,
             device: str | None, precision: str | None, cache_dir: Any, memory_budget: str) -> tuple[Job, Any]:
    """Check the input and the model reference; the Job every task of the run receives."""
    if not isinstance(model, (str, os.PathLike)) and model is not None:
        raise TypeError("model must be a registered name or a checkpoint path: workers load it themselves")
    image = open_stack(stack, key, channel)  # checks the input before any task starts
    if image.axes.replace("C", "") not in ("YX", "ZYX"):
        raise ValueError(f"{stack}: expected a 2D image or a 3D stack")
    model_ref = None if model is None else str(model)
    if model_ref is not None and Path(model_ref).expanduser().is_file():
        model_ref = str(Path(model_ref).expanduser().resolve())
    job = Job(str(Path(stack).expanduser().resolve()), key, channel, model_ref, device, precision,
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
        Where the tasks run (see :mod:`napari_sam.distributed`).
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
    flags = run_tasks(embed_task, [(job, i) for i in indices], scheduler, workers, progress, cancel)
    run = StackRun(Path(str(job.cache_dir)), len(indices), sum(flags), len(flags) - sum(flags))
    if export is not None:
        if export.exists():
            shutil.rmtree(export)
        stack_view(job).export_zarr(export, cancel=cancel)
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
    run_key = json.loads(json.dumps({"job": dataclasses.asdict(job), "params": params, "shape": list(image.shape),
                                     "dtype": str(image.data.dtype)}, default=str))
    work = _work_dir(out, run_key, overwrite)
    raw_path = work / "raw.zarr"
    if not raw_path.exists():
        chunks = (1,) * (len(spatial) - 2) + spatial[-2:]
        zarr.open_array(str(raw_path), mode="w", shape=spatial, chunks=chunks, dtype="uint32")
    calls = [(job, params, str(work), i) for i in indices]
    infos = run_tasks(everything_task, calls, scheduler, workers, progress, cancel)
    signature = combine_signature(image.shape, image.data.dtype, [bytes.fromhex(i["digest"]) for i in infos])
    raw = zarr.open_array(str(raw_path), mode="r")
    linked_path = work / "linked.zarr"
    linked = zarr.open_array(str(linked_path), mode="w", shape=raw.shape, chunks=raw.chunks, dtype="uint32")
    objects = _link(raw, linked, link_iou, link)
    record = provenance(
        load_cached_model(job),
        {"command": "auto", "segment_everything": params, "link": link, "link_iou": link_iou,
         "key": key, "channel": channel},
        stack, signature,
    )
    write_labels(out, linked, None, record, overwrite=overwrite)
    shutil.rmtree(work)
    reused = sum(bool(i["reused"]) for i in infos)
    return StackRun(out, len(indices), len(indices) - reused, reused, objects, signature)

