"""Small shared pieces of the segmentation engine: cancel tokens, progress, index checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Progress = Callable[[int, int], None]
Index = tuple[int, ...]


class SegmentationCancelled(RuntimeError):
    """A long operation was cancelled through its cancel token.

    Attributes
    ----------
    partial : numpy.ndarray or None
        What was computed before the cancel (e.g. the propagated slices so far), when useful.
    """

    def __init__(self, message: str, partial: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def is_cancelled(cancel: Any) -> bool:
    """True when ``cancel`` is set: a callable returning bool, a :class:`threading.Event`, or an
    object with a ``cancelled`` / ``is_cancelled`` attribute (value or method). None: never."""
    if cancel is None:
        return False
    for attribute in ("is_set", "is_cancelled", "cancelled"):
        probe = getattr(cancel, attribute, None)
        if probe is not None:
            return bool(probe() if callable(probe) else probe)
    if callable(cancel):
        return bool(cancel())
    raise TypeError(
        f"cancel must be a callable, a threading.Event or have a 'cancelled' attribute, got {cancel!r}"
    )


def check_cancel(cancel: Any, what: str, partial: np.ndarray | None = None) -> None:
    """Raise :class:`SegmentationCancelled` if ``cancel`` is set."""
    if is_cancelled(cancel):
        raise SegmentationCancelled(f"{what} cancelled", partial)


def report(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` if given."""
    if progress is not None:
        progress(int(done), int(total))


def normalize_index(index: Any, index_shape: Sequence[int]) -> Index:
    """Check a slice index against the stack's leading shape; negative entries count from the end.

    ``index`` is a tuple of ints (one per leading axis), an int for a (Z, Y, X) stack, or
    None / () for a 2D image.
    """
    shape = tuple(int(s) for s in index_shape)
    if index is None:
        if shape:
            raise ValueError(
                f"this stack has leading axes of shape {shape}: give index=(z,) (one int per "
                "leading axis) or prompts in full stack coordinates"
            )
        return ()
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        index = (int(index),)
    try:
        values = tuple(index)
    except TypeError:
        raise TypeError(f"index must be a tuple of ints, got {index!r}") from None
    if len(values) != len(shape):
        raise ValueError(
            f"index {values} has {len(values)} entries but the stack has {len(shape)} leading "
            f"axes of shape {shape}"
        )
    out = []
    for value, size in zip(values, shape):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise TypeError(f"index entries must be integers, got {values!r}")
        v = int(value) + (size if int(value) < 0 else 0)
        if not 0 <= v < size:
            raise ValueError(f"index {values} is outside the stack's leading shape {shape}")
        out.append(v)
    return tuple(out)
