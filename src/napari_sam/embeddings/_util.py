"""Small helpers: byte sizes, cancel tokens, content hashes."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

try:  # xxhash is several times faster than blake2b on large planes; optional
    import xxhash

    HASH_ALGORITHM = "xxh3_128"
except ImportError:  # pragma: no cover - depends on the environment
    xxhash = None  # type: ignore[assignment]
    HASH_ALGORITHM = "blake2b_128"

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str, what: str = "budget") -> int:
    """``2_000_000``, ``"2 GB"``, ``"512MiB"``, ``"1.5 gb"`` -> a number of bytes (>= 0).

    Decimal units (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.
    """
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number of bytes or a string like '2 GB', got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"cannot read {what} {value!r}: use a number of bytes or a size like '2 GB' or '512 MiB'"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise TypeError(f"{what} must be a number of bytes or a string like '2 GB', got {type(value).__name__}")
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a non-negative size, got {value!r}")
    return int(number * _UNITS[unit])


def is_cancelled(cancel: Any) -> bool:
    """True when a cancel token says stop.

    Tokens: None, a :class:`threading.Event` (or anything with ``is_set()``), an object with a
    ``cancelled`` attribute or method, or a callable returning True.
    """
    if cancel is None:
        return False
    for attribute in ("is_set", "is_cancelled", "cancelled"):
        probe = getattr(cancel, attribute, None)
        if probe is not None:
            return bool(probe() if callable(probe) else probe)
    if callable(cancel):
        return bool(cancel())
    raise TypeError(
        f"cancel must be a threading.Event, an object with .cancelled, or a callable; got {type(cancel).__name__}"
    )


def new_hasher() -> Any:
    """A fresh 128-bit hasher (xxh3 when installed, else blake2b) with ``update`` and ``hexdigest``."""
    if xxhash is not None:
        return xxhash.xxh3_128()
    return hashlib.blake2b(digest_size=16)  # pragma: no cover - depends on the environment


def content_hash(array: np.ndarray) -> str:
    """Hex digest of an array's dtype, shape and bytes (C order)."""
    data = np.ascontiguousarray(array)
    hasher = new_hasher()
    hasher.update(f"{data.dtype.str}{data.shape}".encode())
    hasher.update(data.reshape(-1).view(np.uint8))
    return str(hasher.hexdigest())


def payload_checksum(buffer: bytes | memoryview | np.ndarray) -> str:
    """Checksum of a stored embedding's bytes (detects truncated or damaged files)."""
    hasher = new_hasher()
    hasher.update(buffer)
    return str(hasher.hexdigest())


def combine(*parts: str) -> str:
    """A 128-bit hex key from strings (the embedding signature of one slice or tile)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
