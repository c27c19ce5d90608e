"""Shared pieces of the command line: the argument parser, progress bars, model loading."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any, NoReturn

__all__ = [
    "CliParser",
    "Progress",
    "UsageError",
    "add_input_options",
    "add_model_options",
    "add_scale_options",
    "check_workers",
    "model_ref",
    "load_cli_model",
    "open_input",
]


class UsageError(ValueError):
    """A command line that cannot work (conflicting or missing options); exit status 2."""


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``napari-sam: error: ...`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"napari-sam: error: {message} (see '{self.prog} --help')\n")


class Progress:
    """A text progress bar on stderr, usable as a ``progress(done, total)`` callback.

    On a terminal the bar is redrawn in place; otherwise (logs, pipes) a line is written at
    most every few seconds and at the end. ``enabled=False`` (``--quiet``) draws nothing.
    """

    def __init__(self, label: str, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self._last = 0.0
        self._done: tuple[int, int] | None = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or (done, total) == self._done:
            return
        self._done = (done, total)
        now = time.perf_counter()
        finished = total > 0 and done >= total
        if not (finished or self._tty or now - self._last >= 5.0 or self._last == 0.0):
            return
        self._last = now
        width = 30
        filled = int(width * done / total) if total > 0 else 0
        bar = "#" * filled + "." * (width - filled)
        text = f"{self.label} [{bar}] {done}/{total} {now - self.start:6.1f} s"
        if self._tty:
            self.stream.write("\r" + text + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an unfinished bar's line (on a terminal)."""
        if self.enabled and self._tty and self._done and self._done[0] < self._done[1]:
            self.stream.write("\n")
            self.stream.flush()


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--precision``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", "-m", default=None, metavar="NAME_OR_PATH",
        help="registered model name (see 'napari-sam models') or checkpoint file; "
        "default: tiny-synth, shipped with napari-sam",
    )
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: automatic)")
    group.add_argument(
        "--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
        help="inference precision (default: automatic)",
    )


def load_cli_model(args: argparse.Namespace) -> Any:
    """Load the model named on the command line, with a download bar when it is fetched."""
    from napari_sam.weights import load_model

    bar = Progress("download", enabled=not args.quiet)
    try:
        return load_model(args.model, device=args.device, precision=args.precision,
                          progress=lambda d, t: bar(d // 2**20, max(t, 1) // 2**20))
    finally:
        bar.close()


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """``--key`` and ``--channel`` for choosing what to read from an input file."""
    group = parser.add_argument_group("input")
    group.add_argument("--key", default=None,
                       help="TIFF series index, or array path inside a zarr group")
    group.add_argument("--channel", type=int, default=None, metavar="C",
                       help="use channel C of a multi-channel image (0-based)")


def open_input(path: Any, key: Any = None, channel: int | None = None) -> Any:
    """:func:`napari_sam.io.open_stack`: a 2D image or a 3D stack, lazily."""
    from napari_sam.io import open_stack

    return open_stack(path, key, channel)


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler``, ``--workers``, ``--memory-budget`` for per-slice Dask runs."""
    group = parser.add_argument_group("scale-out (Dask)")
    group.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="where slices are processed: 'threads' (default, this process), 'processes' "
        "(a local cluster of --workers processes), or a Dask scheduler address tcp://host:8786",
    )
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="threads or local processes (default 1 thread, 2 processes)")
    group.add_argument("--memory-budget", default="1 GB", metavar="SIZE",
                       help="embeddings kept in memory per worker (default '1 GB')")


def model_ref(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model, device, precision) from the command line, as the scale-out functions take them."""
    precision = None if args.precision in (None, "auto") else args.precision
    return args.model, args.device, precision


def check_workers(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
