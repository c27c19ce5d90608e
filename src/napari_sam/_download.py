"""Hash-checked downloads (through pooch) and file hashes remembered across sessions.

Hashes are written as pooch writes them, ``"<algorithm>:<hex>"`` (``"sha256:..."``,
``"xxh128:..."``); a bare hex string is sha256.

Hashing a large weights file costs about 1 s per 400 MB, so every file's hashes are
remembered in a small JSON stamp (size, mtime in ns, hashes) under ``<cache>/weights/.hashes``:
while the file's size and mtime are unchanged, its hash is read from the stamp instead of
the file. A file changed in place gets a new mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pooch

__all__ = [
    "ChecksumError",
    "DownloadCancelled",
    "DownloadError",
    "MissingDependencyError",
    "fetch",
    "file_hashes",
    "split_hash",
]

_log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_XXH_ALGORITHMS = ("xxh128", "xxh64", "xxh32", "xxh3_128", "xxh3_64")
_memo: dict[str, dict[str, Any]] = {}

ProgressCallback = Callable[[int, int], None]


class ChecksumError(ValueError):
    """A file's hash differs from the published one (corrupt or tampered download)."""


class DownloadError(OSError):
    """A file could not be downloaded (offline, server unreachable, HTTP error)."""


class DownloadCancelled(Exception):
    """The download was cancelled through its cancel token; nothing was kept."""


class MissingDependencyError(ImportError):
    """An optional package needed for this operation is not installed."""


def split_hash(known_hash: str) -> tuple[str, str]:
    """``"xxh128:abc"`` -> ``("xxh128", "abc")``; a bare hex string is sha256."""
    if ":" in known_hash:
        algorithm, _, digest = known_hash.partition(":")
        return algorithm.lower(), digest.lower()
    return "sha256", known_hash.lower()


def _new_hasher(algorithm: str, purpose: str = "") -> Any:
    if algorithm in _XXH_ALGORITHMS:
        try:
            import xxhash
        except ImportError as exc:
            raise MissingDependencyError(
                f"checking {purpose or 'this file'} needs an {algorithm} hash, which needs the "
                "'xxhash' package: pip install xxhash"
            ) from exc
        return getattr(xxhash, algorithm)()
    try:
        return hashlib.new(algorithm)
    except ValueError as exc:
        raise ValueError(f"unknown hash algorithm {algorithm!r} for {purpose or 'a file'}") from exc


def check_hash_support(known_hash: str, purpose: str = "") -> None:
    """Raise :class:`MissingDependencyError` now if ``known_hash`` cannot be checked here."""
    _new_hasher(split_hash(known_hash)[0], purpose)


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    for attribute in ("is_set", "is_cancelled", "cancelled"):
        probe = getattr(cancel, attribute, None)
        if probe is not None:
            return bool(probe() if callable(probe) else probe)
    return bool(cancel())


def _stamp_file(path: Path, stamp_dir: Path) -> Path:
    key = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:32]
    return stamp_dir / f"{key}.json"


def _read_stamp(path: Path, stamp_dir: Path | None, stat: os.stat_result) -> dict[str, str]:
    record = _memo.get(str(path))
    if record is None and stamp_dir is not None:
        try:
            record = json.loads(_stamp_file(path, stamp_dir).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
    if (
        not isinstance(record, dict)
        or record.get("path") != str(path)
        or record.get("size") != stat.st_size
        or record.get("mtime_ns") != stat.st_mtime_ns
    ):
        return {}
    _memo[str(path)] = record
    return dict(record.get("hashes", {}))


def _write_stamp(
    path: Path, stamp_dir: Path | None, stat: os.stat_result, hashes: dict[str, str]
) -> None:
    record = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hashes": hashes}
    _memo[str(path)] = record
    if stamp_dir is None:
        return
    try:
        stamp_dir.mkdir(parents=True, exist_ok=True)
        target = _stamp_file(path, stamp_dir)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        _log.debug("could not write hash stamp for %s: %s", path, exc)


def file_hashes(
    path: str | os.PathLike[str],
    algorithms: Iterable[str] = ("sha256",),
    stamp_dir: Path | None = None,
) -> dict[str, str]:
    """Hex digests of a file, read in one pass, remembered while the file is unchanged.

    Parameters
    ----------
    path
        The file.
    algorithms
        hashlib names (``"sha256"``) and xxhash names (``"xxh128"``).
    stamp_dir
        Folder for the persistent stamps; ``None`` remembers them in this process only.

    Returns
    -------
    dict
        ``{algorithm: hex digest}`` for every algorithm asked for (and any already known).
    """
    file = Path(path).resolve()
    stat = file.stat()
    known = _read_stamp(file, stamp_dir, stat)
    wanted = [a.lower() for a in algorithms if a.lower() not in known]
    if not wanted:
        return known
    hashers = {a: _new_hasher(a, str(file)) for a in wanted}
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    known.update({a: h.hexdigest() for a, h in hashers.items()})
    _write_stamp(file, stamp_dir, stat, known)
    return known


class _StreamingDownloader:
    """A pooch downloader: streams over HTTP(S), hashes while writing, reports progress.

    Keeps the digests of what it wrote in ``self.hashes`` so that a mismatch can be
    reported with the actual hash after pooch has deleted the bad file.
    """

    def __init__(
        self,
        algorithms: Iterable[str],
        progress: ProgressCallback | None,
        cancel: Any,
        timeout: float,
    ) -> None:
        self.algorithms = tuple(algorithms)
        self.progress = progress
        self.cancel = cancel
        self.timeout = timeout
        self.hashes: dict[str, str] = {}

    def __call__(self, url: str, output_file: Any, pooch_instance: Any = None) -> None:
        import requests

        hashers = {a: _new_hasher(a, url) for a in self.algorithms}
        with requests.get(url, stream=True, timeout=self.timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length") or 0)
            done = 0
            if self.progress is not None:
                self.progress(0, total)
            with open(output_file, "wb") as out:
                for chunk in response.iter_content(chunk_size=_CHUNK):
                    if _is_cancelled(self.cancel):
                        raise DownloadCancelled(f"download of {url} cancelled")
                    if not chunk:
                        continue
                    out.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    done += len(chunk)
                    if self.progress is not None:
                        self.progress(done, max(total, done))
        self.hashes = {a: h.hexdigest() for a, h in hashers.items()}


def _place_by_hand(url: str, dest: Path, known_hash: str) -> str:
    algorithm, digest = split_hash(known_hash)
    return (
        f"cannot download {url}; download it elsewhere and place the file by hand at "
        f"{dest} (expected {algorithm} {digest})"
    )


def fetch(
    url: str,
    known_hash: str,
    dest: Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    stamp_dir: Path | None = None,
    timeout: float = 30.0,
) -> Path:
    """Return ``dest``, downloading ``url`` into it first unless a file with the right hash is there.

    Parameters
    ----------
    url
        Where the file is published.
    known_hash
        ``"<algorithm>:<hex>"`` (or bare sha256 hex) the file must have.
    dest
        Final path; the download goes to a temporary file next to it and is moved there only
        once its hash matches.
    progress
        Called as ``progress(done_bytes, total_bytes)`` while downloading.
    cancel
        Cancel token: a callable returning True, or an object with ``is_set()`` (e.g.
        :class:`threading.Event`) or a ``cancelled`` attribute.
    stamp_dir
        Where hash stamps are kept (see :func:`file_hashes`).
    timeout
        Seconds to wait for the server to answer.

    Raises
    ------
    ChecksumError
        The downloaded file has another hash; it was deleted.
    DownloadError
        Offline, unreachable, or an HTTP error; the message says where to place the file by hand.
    DownloadCancelled
        ``cancel`` was set; the partial file was deleted.
    MissingDependencyError
        The hash is xxh128 and ``xxhash`` is not installed.
    """
    import requests

    algorithm, digest = split_hash(known_hash)
    check_hash_support(known_hash, str(dest.name))
    dest = dest.resolve()
    if dest.exists():
        actual = file_hashes(dest, [algorithm, "sha256"], stamp_dir)[algorithm]
        if actual == digest:
            return dest
        _log.warning(
            "%s has %s %s instead of %s; removing it and downloading again", dest, algorithm, actual, digest
        )
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    downloader = _StreamingDownloader({algorithm, "sha256"}, progress, cancel, timeout)
    try:
        pooch.retrieve(
            url,
            known_hash=f"{algorithm}:{digest}",
            fname=dest.name,
            path=dest.parent,
            downloader=downloader,
        )
    except requests.exceptions.RequestException as exc:
        raise DownloadError(f"{_place_by_hand(url, dest, known_hash)}. Reason: {exc}") from exc
    except ValueError as exc:
        if not downloader.hashes:
            raise
        raise ChecksumError(
            f"the file downloaded from {url} is corrupt or not the published one: expected "
            f"{algorithm} {digest}, got {downloader.hashes.get(algorithm)}. It was deleted; "
            "try again, or download it elsewhere and place it by hand at " + str(dest)
        ) from exc
    _write_stamp(dest, stamp_dir, dest.stat(), dict(downloader.hashes))
    return dest
