"""Background work for the widget: napari thread workers with progress, cancel and staleness.

Every task has a *kind* ("decode", "precompute", ...). Starting a task of a kind makes the
earlier tasks of that kind stale: their cancel token is set and their result, if it still
arrives, is dropped. A result is delivered (on the UI thread) only if its task is the latest
of its kind and was not cancelled, so switching image, model or slice never writes stale
results. Progress is reported from the worker through a queued Qt signal, throttled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QThreadPool, Signal
from qtpy.QtWidgets import QApplication

ProgressFn = Callable[[int, int], None]
Work = Callable[[ProgressFn, threading.Event], Any]

# Several of our workers may run at once (a precompute, a prefetch, a click's decode); the
# global pool defaults to one thread per core, which would queue a click behind background
# jobs on a 2-core laptop.
MIN_POOL_THREADS = 6
PROGRESS_INTERVAL_S = 0.05


@dataclass(eq=False)
class Task:
    """One submitted piece of work."""

    kind: str
    generation: int
    label: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    worker: Any = None


class TaskRunner(QObject):
    """Starts workers, tracks them, and delivers only current results.

    Signals
    -------
    progress(kind, label, done, total)
        From long tasks, throttled to one every 50 ms (and the last).
    activity()
        A task started or finished.
    message(str)
        A status line from a worker (emit it from any thread).
    """

    progress = Signal(str, str, int, int)
    activity = Signal()
    message = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._generation: dict[str, int] = {}
        self._active: set[Task] = set()
        self._closed = False
        # Deleted with its parent (e.g. napari's window closed with the dock in it) without
        # close(): running workers still finish later, so mark the runner closed then, which
        # drops their results instead of touching the deleted Qt object.
        def on_destroyed(*_: Any) -> None:
            self.cancel()
            self._closed = True

        self.destroyed.connect(on_destroyed)
        pool = QThreadPool.globalInstance()
        if pool is not None and pool.maxThreadCount() < MIN_POOL_THREADS:
            pool.setMaxThreadCount(MIN_POOL_THREADS)

    # -- submitting --------------------------------------------------------------------------
    def start(
        self,
        kind: str,
        work: Work,
        on_done: Callable[[Any], None] | None = None,
        *,
        label: str = "",
        on_error: Callable[[BaseException], None] | None = None,
        supersede: bool = True,
    ) -> Task:
        """Run ``work(progress, cancel)`` in a worker thread.

        Parameters
        ----------
        kind
            Task family; with ``supersede`` the previous tasks of this kind are cancelled.
        work
            The function to run off the UI thread; it receives a progress callback
            ``progress(done, total)`` and a ``threading.Event`` to poll for cancellation.
        on_done
            Called on the UI thread with the result, only if the task is still current.
        label
            Shown with progress ("encoding slice 3").
        on_error
            Called on the UI thread with the exception of a current task; default: napari's
            error notification.
        supersede
            Cancel earlier tasks of the same kind (default). False: run alongside them.
        """
        if self._closed:
            raise RuntimeError("the widget was closed")
        if supersede:
            self.cancel(kind)
        generation = self._generation.get(kind, 0) + (1 if supersede else 0)
        self._generation[kind] = generation
        task = Task(kind, generation, label)
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last[0] >= PROGRESS_INTERVAL_S:
                last[0] = now
                self.progress.emit(kind, task.label, int(done), int(total))

        def run() -> Any:
            return work(report, task.cancel)

        worker = create_worker(run, _ignore_errors=True)
        task.worker = worker
        worker.returned.connect(lambda result: self._deliver(task, on_done, result))
        worker.errored.connect(lambda exc: self._fail(task, on_error, exc))
        worker.finished.connect(lambda: self._finish(task))
        self._active.add(task)
        worker.start()
        self.activity.emit()
        return task

    def is_current(self, task: Task) -> bool:
        """True if ``task`` is the latest of its kind and not cancelled."""
        return (
            not self._closed
            and not task.cancel.is_set()
            and self._generation.get(task.kind) == task.generation
        )

    def _deliver(self, task: Task, on_done: Callable[[Any], None] | None, result: Any) -> None:
        if on_done is not None and self.is_current(task):
            on_done(result)

    def _fail(
        self, task: Task, on_error: Callable[[BaseException], None] | None, exc: BaseException
    ) -> None:
        if not self.is_current(task):
            return  # a superseded or cancelled task: its error is no news
        if on_error is not None:
            on_error(exc)
        else:
            show_error(f"napari-sam: {exc}")

    def _finish(self, task: Task) -> None:
        task.done = True
        self._active.discard(task)
        if not self._closed:  # after close nobody listens, and Qt may have deleted this object
            self.activity.emit()

    # -- control -----------------------------------------------------------------------------
    def cancel(self, kind: str | None = None) -> None:
        """Cancel the running tasks of ``kind`` (all kinds if None); their results are dropped."""
        for task in list(self._active):
            if kind is None or task.kind == kind:
                task.cancel.set()
        if kind is None:
            for key in self._generation:
                self._generation[key] += 1
        elif kind in self._generation:
            self._generation[kind] += 1

    def running(self, kind: str | None = None) -> list[Task]:
        """Tasks still running (of ``kind``, or all), including cancelled ones winding down."""
        return [t for t in self._active if kind is None or t.kind == kind]

    def busy(self, kind: str | None = None) -> bool:
        return bool(self.running(kind))

    def wait(self, timeout: float = 120.0, busy: Callable[[], bool] | None = None) -> None:
        """Process Qt events while ``busy()`` (default: while any task runs).

        Raises TimeoutError after ``timeout`` seconds.
        """
        app = QApplication.instance()
        deadline = time.monotonic() + timeout
        busy = busy if busy is not None else self.busy
        while busy():
            if time.monotonic() > deadline:
                kinds = sorted({t.kind for t in self._active})
                raise TimeoutError(f"background work still running after {timeout} s: {kinds}")
            if app is not None:
                app.processEvents()
            time.sleep(0.002)
        if app is not None:
            app.processEvents()

    def close(self) -> None:
        """Cancel everything; later results are dropped and new tasks refused."""
        self.cancel()
        self._closed = True
