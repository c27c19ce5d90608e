"""Keep glibc's malloc from returning the encoder's large temporaries to the kernel on every free.

glibc serves an allocation above its mmap threshold with fresh pages from ``mmap`` and unmaps
them again on ``free``; every such buffer is then page-faulted and zeroed by the kernel on first
touch. An image encoder pass allocates and frees buffers of tens of MB in every block, so on
Linux this costs system time in proportion to the bytes allocated (measured here, ViT-B at
1024 px: about 1.5 GB of page faults per pass by default; see ``docs/benchmarks.md``).

:func:`tune_allocator` raises the mmap threshold to glibc's maximum (32 MiB; larger buffers
are still mapped and returned on free, so big image arrays never stay resident) and the trim
threshold to :data:`TRIM_THRESHOLD`, so freed heap memory up to that size is kept for reuse
instead of being given back and faulted in again. The cost is resident memory that stays at
the high-water mark of the heap (up to that trim threshold above what is in use).

It is called lazily by the encode paths (never at ``import napari_sam``), once per process,
and does nothing when:

- the environment variable ``NAPARI_SAM_MALLOC`` is ``"default"`` (or ``"off"``/``"0"``),
- the C library is not glibc (macOS, Windows, musl), or another allocator is preloaded
  (jemalloc, tcmalloc, mimalloc in ``LD_PRELOAD``),
- the user already tunes malloc (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
  ``MALLOC_MMAP_MAX_``, ``MALLOC_TOP_PAD_`` or ``glibc.malloc`` in ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

__all__ = ["ALLOCATOR_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "allocator_state", "tune_allocator"]

ALLOCATOR_ENV = "NAPARI_SAM_MALLOC"
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems
TRIM_THRESHOLD = 128 * 2**20  # measured: 64 MiB keeps some faults in fp32; 512 MiB gains nothing over 128

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_OPT_OUT = {"default", "off", "0", "false", "no"}
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_state: str | None = None


def _reason_to_skip() -> str | None:
    """Why the allocator is left alone, or None to tune it."""
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() in _OPT_OUT:
        return f"disabled by {ALLOCATOR_ENV}"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    preload = os.environ.get("LD_PRELOAD", "").lower()
    if any(name in preload for name in _OTHER_ALLOCATORS):
        return "another allocator is preloaded"
    if any(name in os.environ for name in _USER_TUNING) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return "malloc already tuned through the environment"
    return None


def tune_allocator() -> str:
    """Apply the malloc settings described in this module's docstring, once per process.

    Returns
    -------
    str
        ``"tuned"``, or why nothing was changed (``"disabled by NAPARI_SAM_MALLOC"``,
        ``"not glibc"``, ...). Later calls return the first call's answer.
    """
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is None:
            reason = _reason_to_skip()
            if reason is None:
                try:
                    mallopt = ctypes.CDLL(None).mallopt
                    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                    mallopt.restype = ctypes.c_int
                    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
                    reason = "tuned" if ok else "mallopt refused the settings"
                except (OSError, AttributeError):
                    reason = "mallopt not available"
            _state = reason
    return _state


def allocator_state() -> str | None:
    """What :func:`tune_allocator` did in this process (None: not called yet)."""
    return _state
