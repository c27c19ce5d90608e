"""The disk tier: one file per slice (or tile) embedding, named by its signature.

File layout (``<directory>/v<FORMAT_VERSION>/<sig[:2]>/<sig>.emb``)::

    8 bytes   magic b"NSAMEMB\\0"
    4 bytes   header length n, uint32 little-endian
    n bytes   JSON header: signature, dtype, shape, original_size, input_size, checksum
    rest      the features, C order, little-endian

Writes go to a temporary file in the same folder, then ``os.replace`` (atomic), so a reader
in another process sees either nothing or a whole file. A file whose header, length or
checksum does not match is treated as missing (and removed), so it gets recomputed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import struct
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_sam.embeddings._util import payload_checksum
from napari_sam.embeddings.errors import CacheWarning
from napari_sam.predictor import ImageEmbedding

FORMAT_VERSION = 1
MAGIC = b"NSAMEMB\x00"
SUFFIX = ".emb"
_STALE_TEMP_S = 3600.0
_log = logging.getLogger(__name__)


def encode_entry(signature: str, entry: ImageEmbedding) -> tuple[bytes, np.ndarray]:
    """Header bytes and the payload array of one entry."""
    payload = np.ascontiguousarray(entry.features.detach().cpu().numpy())
    payload = payload.astype(payload.dtype.newbyteorder("<"), copy=False)
    header = {
        "format": FORMAT_VERSION,
        "signature": signature,
        "dtype": payload.dtype.str,
        "shape": list(payload.shape),
        "original_size": list(entry.original_size),
        "input_size": list(entry.input_size),
        "checksum": payload_checksum(payload.reshape(-1).view(np.uint8)),
    }
    text = json.dumps(header).encode()
    text += b" " * (-(12 + len(text)) % 64)  # keeps the payload 64-byte aligned
    return MAGIC + struct.pack("<I", len(text)) + text, payload


def decode_entry(signature: str, data: bytes | bytearray) -> ImageEmbedding | None:
    """Parse and check one file's bytes; None when anything does not match."""
    if len(data) < 12 or data[:8] != MAGIC:
        return None
    (n,) = struct.unpack("<I", data[8:12])
    try:
        header = json.loads(data[12 : 12 + n].decode())
        dtype = np.dtype(header["dtype"])
        shape = tuple(int(s) for s in header["shape"])
        if header["format"] != FORMAT_VERSION or header["signature"] != signature:
            return None
        body = memoryview(data)[12 + n :]
        if len(body) != int(np.prod(shape)) * dtype.itemsize or payload_checksum(body) != header["checksum"]:
            return None
        array = np.frombuffer(data, dtype=dtype, offset=12 + n).reshape(shape)
        original = tuple(int(s) for s in header["original_size"])
        inner = tuple(int(s) for s in header["input_size"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not array.flags.writeable or not dtype.isnative:  # bytes are read-only: copy
        array = array.astype(dtype.newbyteorder("="), copy=True)
    features = torch.from_numpy(array)
    return ImageEmbedding(features, original, inner)  # type: ignore[arg-type]


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data) :]


class DiskStore:
    """Persistent, size-bounded embedding files shared by processes.

    Parameters
    ----------
    directory : Path
        Created if missing. If it cannot be created or written, the store warns once
        (:class:`CacheWarning`) and stops writing; embeddings then live in memory only.
    budget : int
        Bytes; when the files exceed it the least recently used are removed (down to 90 %).
    """

    def __init__(self, directory: Path, budget: int) -> None:
        self.root = Path(directory).expanduser() / f"v{FORMAT_VERSION}"
        self.budget = int(budget)
        self.writable = True
        self.corrupt_found = 0
        self._approx_bytes: int | None = None
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._disable(err)

    def path(self, signature: str) -> Path:
        return self.root / signature[:2] / f"{signature}{SUFFIX}"

    def exists(self, signature: str) -> bool:
        return self.path(signature).is_file()

    # -- reading -------------------------------------------------------------------------------
    def get(self, signature: str) -> ImageEmbedding | None:
        """The stored entry, or None if missing, partial or damaged (damaged files are removed)."""
        path = self.path(signature)
        try:
            with open(path, "rb") as handle:
                data = bytearray(os.fstat(handle.fileno()).st_size)
                handle.readinto(data)
        except OSError:
            return None
        entry = decode_entry(signature, data)
        if entry is None:
            self.corrupt_found += 1
            _log.warning("embedding cache file %s is damaged; it will be recomputed", path)
            self._remove(path)
            return None
        with contextlib.suppress(OSError):  # mark as recently used, for eviction
            os.utime(path)
        return entry

    # -- writing -------------------------------------------------------------------------------
    def put(self, signature: str, entry: ImageEmbedding) -> bool:
        """Write atomically; False (after one warning) when the disk cannot take it."""
        if not self.writable:
            return False
        header, payload = encode_entry(signature, entry)
        path = self.path(signature)
        tmp_name = None
        try:
            try:
                fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{signature}.", suffix=".tmp")
            except FileNotFoundError:  # first entry in this sub-folder (or the folder was removed)
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{signature}.", suffix=".tmp")
            try:
                _write_all(fd, memoryview(header))
                _write_all(fd, payload.reshape(-1).view(np.uint8).data)
            finally:
                os.close(fd)
            try:
                os.replace(tmp_name, path)
            except PermissionError:
                # Windows refuses to replace a file another process has open: it is the same data.
                if not path.is_file():
                    raise
                self._remove(Path(tmp_name))
            tmp_name = None
        except OSError as err:
            if tmp_name is not None:
                self._remove(Path(tmp_name))
            self._disable(err)
            return False
        self._account(len(header) + payload.nbytes)
        return True

    def _disable(self, err: OSError) -> None:
        self.writable = False
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "the disk is full"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = "there is no permission to write there"
        else:
            reason = f"writing failed ({err})"
        warnings.warn(
            f"embeddings cannot be saved in {self.root.parent}: {reason}; they are kept in memory "
            "only for this session (free some space or choose another cache directory)",
            CacheWarning,
            stacklevel=4,
        )

    # -- size bound ----------------------------------------------------------------------------
    def _account(self, nbytes: int) -> None:
        with self._lock:
            if self._approx_bytes is None:
                self._approx_bytes = self.total_bytes()
            else:
                self._approx_bytes += nbytes
            over = self._approx_bytes > self.budget
        if over:
            self.evict(int(self.budget * 0.9))

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry; stale temporary files are removed on the way."""
        entries = []
        now = time.time()
        for sub in self.root.iterdir() if self.root.is_dir() else []:
            if not sub.is_dir():
                continue
            for item in os.scandir(sub):
                try:
                    stat = item.stat()
                except OSError:
                    continue
                if item.name.endswith(SUFFIX):
                    entries.append((stat.st_mtime, stat.st_size, Path(item.path)))
                elif item.name.endswith(".tmp") and now - stat.st_mtime > _STALE_TEMP_S:
                    self._remove(Path(item.path))
        return entries

    def total_bytes(self) -> int:
        """Bytes of all entries in the store (all processes)."""
        return sum(size for _, size, _ in self._scan())

    def evict(self, target: int) -> int:
        """Remove least recently used entries until the store holds at most ``target`` bytes."""
        entries = sorted(self._scan())
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= target:
                break
            if self._remove(path):
                total -= size
                removed += 1
        with self._lock:
            self._approx_bytes = total
        return removed

    def clear(self) -> None:
        """Remove every entry."""
        self.evict(0)

    @staticmethod
    def _remove(path: Path) -> bool:
        try:
            path.unlink()
            return True
        except OSError:
            return False
