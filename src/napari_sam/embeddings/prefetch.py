"""A single background worker that computes embeddings the user is likely to look at next."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable

_log = logging.getLogger(__name__)


class Prefetcher:
    """Runs ``work(item)`` for queued items on one daemon thread, newest request first.

    A new :meth:`submit` replaces what is still queued (the user moved on). The thread starts
    on demand and ends after ``idle_timeout`` seconds without work, so an unused view holds no
    thread. Failures are logged, never raised: the foreground ``get`` computes what is missing.
    """

    def __init__(self, work: Callable[[Hashable], None], idle_timeout: float = 5.0) -> None:
        self._work = work
        self._idle_timeout = idle_timeout
        self._queue: deque[Hashable] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False

    def submit(self, items: Iterable[Hashable]) -> None:
        """Queue ``items`` (in order) instead of whatever was still waiting; never blocks on work."""
        with self._cond:
            self._queue.clear()
            self._queue.extend(items)
            self._stopping = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="napari-sam-prefetch", daemon=True)
                self._thread.start()
            self._cond.notify()

    def clear(self) -> None:
        """Forget queued items (the one being computed finishes)."""
        with self._cond:
            self._queue.clear()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and nothing is running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker: drop the queue and wait for the current item to finish."""
        with self._cond:
            self._queue.clear()
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(self._idle_timeout)
                if self._stopping or not self._queue:
                    self._thread = None if self._thread is threading.current_thread() else self._thread
                    self._cond.notify_all()
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._work(item)
            except Exception as err:  # a background failure must not kill the worker
                _log.warning("prefetching %r failed: %s", item, err)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
