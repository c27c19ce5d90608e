"""Running per-slice tasks with Dask: the local thread pool, a local cluster, or a remote one."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from napari_sam.distributed.worker import RunCancelled

__all__ = ["open_scheduler", "run_tasks"]

Progress = Callable[[int, int], None]


def run_tasks(
    func: Callable[..., Any], calls: Sequence[tuple[Any, ...]], scheduler: Any, workers: int | None,
    progress: Progress | None, cancel: Any,
) -> list[Any]:
    """Run ``func(*args)`` for every args tuple as Dask tasks; results in call order."""
    total = len(calls)
    if progress is not None:
        progress(0, total)
    if scheduler in (None, "threads"):
        return _run_threads(func, calls, workers, progress, cancel)
    if isinstance(scheduler, str) and scheduler != "processes" and "://" not in scheduler:
        raise ValueError(
            f"scheduler {scheduler!r}: use 'threads', 'processes', an address like tcp://host:8786, "
            "or a dask.distributed.Client"
        )
    client_type = _distributed(scheduler).Client
    if scheduler == "processes":
        with open_scheduler(scheduler, workers) as client:
            return _run_client(client, func, calls, progress, cancel)
    if isinstance(scheduler, client_type):
        return _run_client(scheduler, func, calls, progress, cancel)
    if not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be a string or a dask.distributed.Client, got {type(scheduler).__name__}")
    with client_type(scheduler, timeout="30s") as client:
        return _run_client(client, func, calls, progress, cancel)


def _distributed(scheduler: Any) -> Any:
    try:
        import distributed
    except ImportError as err:
        from napari_sam._download import MissingDependencyError

        raise MissingDependencyError(
            f"scheduler {scheduler!r} needs dask.distributed: pip install distributed"
        ) from err
    return distributed


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


@contextlib.contextmanager
def open_scheduler(scheduler: Any, workers: int | None = None) -> Iterator[Any]:
    """Start the local cluster of ``scheduler="processes"`` once for several runs.

    Yields a ``dask.distributed.Client`` for "processes" (closed on exit), else ``scheduler``
    unchanged; pass what it yields as the ``scheduler`` of each run.
    """
    if scheduler != "processes":
        yield scheduler
        return
    distributed = _distributed(scheduler)
    with distributed.LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as client:
            yield client
