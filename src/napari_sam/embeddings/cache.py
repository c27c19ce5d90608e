"""EmbeddingCache: slice embeddings computed once, kept in memory (LRU) and on disk.

Every entry is keyed by its signature: a hash of the pixels it was computed from, the model
weights, the model precision and input size, the intensity normalisation, the storage dtype and
the cache format version. A changed pixel, model or normalisation gives another signature, so a
stale embedding is never returned: it is recomputed.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_sam.embeddings._util import HASH_ALGORITHM, combine, new_hasher, parse_bytes
from napari_sam.embeddings.disk import FORMAT_VERSION, DiskStore
from napari_sam.embeddings.memory import MemoryLRU
from napari_sam.model import Sam
from napari_sam.predictor import ImageEmbedding, encode_images
from napari_sam.preprocess import IntensityNorm

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.embeddings.view import StackEmbeddings

_LOCKS: weakref.WeakKeyDictionary[Sam, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Sam) -> threading.Lock:
    """The lock that serialises encoder calls on ``model`` (one per model, shared by all caches)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


def default_directory() -> Path:
    """``<napari-sam cache dir>/embeddings`` (``NAPARI_SAM_CACHE_DIR`` overrides the base)."""
    from napari_sam.weights import cache_dir

    return cache_dir() / "embeddings"


def encoder_key(model: Sam) -> str:
    """What identifies the model's embeddings: its weights hash, else a hash of the encoder weights."""
    if getattr(model, "weights_hash", ""):
        return f"weights:{model.weights_hash}"
    hasher = new_hasher()
    hasher.update(type(model.image_encoder).__name__.encode())
    state = {**{f"image_encoder.{k}": v for k, v in model.image_encoder.state_dict().items()},
             "pixel_mean": model.pixel_mean, "pixel_std": model.pixel_std}
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return f"state:{hasher.hexdigest()}"


@dataclass
class CacheStats:
    """Counters since the cache was made (for tests, benchmarks and a status line)."""

    memory_hits: int = 0
    disk_hits: int = 0
    imported_hits: int = 0
    computed: int = 0
    encoder_calls: int = 0


class _Pending:
    """An embedding being computed by some thread; others wait for it instead of recomputing."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ImageEmbedding | None = None


class EmbeddingCache:
    """Per-slice SAM image embeddings for stacks, in memory and optionally on disk.

    Parameters
    ----------
    model : Sam
        From :func:`napari_sam.load_model`.
    memory_budget : int or str
        Most bytes of embeddings held in memory ("2 GB", "512 MiB", or an int); least recently
        used ones are dropped first. Shared by all views of this cache.
    directory : str or Path, optional
        Persistent store shared between sessions and processes; None keeps embeddings in memory
        only. :func:`default_directory` is the user cache folder.
    disk_budget : int or str
        Most bytes of files in ``directory``; least recently used files are removed first.
    half_precision : bool
        Store float16 (half the memory and disk); embeddings are returned as float32.

    Notes
    -----
    The model is identified by ``model.weights_hash`` (set by ``load_model``), else by a hash of
    its encoder weights taken once; after changing weights in place (fine-tuning), set a new
    ``weights_hash`` or call :meth:`refresh_model_key`, or stale embeddings would be reused.

    Examples
    --------
    >>> cache = EmbeddingCache(model, memory_budget="1 GB", directory=default_directory())  # doctest: +SKIP
    >>> view = cache.view(stack)                  # (Z, Y, X) numpy, dask or zarr
    >>> view.precompute(start=(10,))              # slices 10, 11, 9, 12, 8, ...
    >>> predictor, offset = view.predictor((10,), points=[[120, 80]])
    """

    def __init__(
        self,
        model: Sam,
        memory_budget: int | str = "2 GB",
        directory: str | Path | None = None,
        disk_budget: int | str = "20 GB",
        half_precision: bool = False,
    ) -> None:
        if not isinstance(model, Sam):
            raise TypeError(f"model must be a napari_sam Sam model (from load_model), got {type(model).__name__}")
        self.model = model
        self.memory = MemoryLRU(parse_bytes(memory_budget, "memory_budget"))
        self.disk = None if directory is None else DiskStore(Path(directory), parse_bytes(disk_budget, "disk_budget"))
        self.half_precision = bool(half_precision)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._state_key: str | None = None

    # -- identity ------------------------------------------------------------------------------
    @property
    def model_key(self) -> str:
        """Identifies the model's weights (``model.weights_hash``, else a hash of the encoder)."""
        if getattr(self.model, "weights_hash", ""):
            return f"weights:{self.model.weights_hash}"
        if self._state_key is None:
            self._state_key = encoder_key(self.model)
        return self._state_key

    def refresh_model_key(self) -> None:
        """Hash the encoder weights again (after changing them in place without a new ``weights_hash``)."""
        self._state_key = None

    def signature_prefix(self, norm: IntensityNorm) -> str:
        """The part of every signature that does not depend on the pixels."""
        return combine(
            f"napari-sam-embedding-v{FORMAT_VERSION}",
            self.model_key,
            str(getattr(self.model, "precision", "fp32")),
            f"img_size={self.model.img_size}",
            norm.signature(),
            "float16" if self.half_precision else "float32",
            HASH_ALGORITHM,
        )

    def view(
        self,
        stack: Any,
        channel_axis: int | None = None,
        norm: IntensityNorm | None = None,
        *,
        tile_threshold: int = 2048,
        tile_size: int | None = None,
        halo: int | None = None,
    ) -> StackEmbeddings:
        """Bind a stack: (Y, X), (Y, X, 3), (Z, Y, X), (T, Z, Y, X), ... numpy, dask or zarr.

        ``norm`` defaults to one computed from up to 16 evenly spaced planes. Planes whose
        longest side exceeds ``tile_threshold`` are embedded as tiles of ``tile_size``
        (default ``model.img_size``) overlapping by ``halo`` (default ``tile_size // 8``) on
        each side.
        """
        from napari_sam.embeddings.view import StackEmbeddings

        return StackEmbeddings(
            self, stack, channel_axis=channel_axis, norm=norm,
            tile_threshold=tile_threshold, tile_size=tile_size, halo=halo,
        )

    # -- tiers ---------------------------------------------------------------------------------
    def _out(self, entry: ImageEmbedding) -> ImageEmbedding:
        if entry.features.dtype == torch.float32:
            return entry
        return ImageEmbedding(entry.features.float(), entry.original_size, entry.input_size)

    def _stored(self, entry: ImageEmbedding) -> ImageEmbedding:
        features = entry.features.detach().to("cpu")
        features = features.half() if self.half_precision else features.float()
        return ImageEmbedding(features.clone().contiguous(), entry.original_size, entry.input_size)

    def contains(self, signature: str) -> bool:
        """True if the embedding is in memory or on disk (without reading it)."""
        return signature in self.memory or (self.disk is not None and self.disk.exists(signature))

    def lookup(self, signature: str) -> ImageEmbedding | None:
        """From memory, else from disk (then kept in memory); None on a miss."""
        entry = self.memory.get(signature)
        if entry is not None:
            self.stats.memory_hits += 1
            return self._out(entry)
        if self.disk is not None:
            entry = self.disk.get(signature)
            if entry is not None:
                self.stats.disk_hits += 1
                self.memory.put(signature, entry)
                return self._out(entry)
        return None

    def store(self, signature: str, entry: ImageEmbedding) -> ImageEmbedding:
        """Keep an embedding in memory and on disk; returns it as float32."""
        stored = self._stored(entry)
        self.memory.put(signature, stored)
        if self.disk is not None:
            self.disk.put(signature, stored)
        return self._out(stored)

    def clear_memory(self) -> None:
        """Drop every embedding held in memory (files stay)."""
        self.memory.clear()

    @property
    def memory_bytes(self) -> int:
        """Bytes of embeddings held in memory now."""
        return self.memory.nbytes

    # -- computing -----------------------------------------------------------------------------
    def encode(self, images_255: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """One batched encoder call on (Y, X, 3) float 0..255 images, one thread at a time."""
        with model_lock(self.model):
            self.stats.encoder_calls += 1
            return encode_images(self.model, list(images_255))

    def claim(self, signatures: Sequence[str]) -> tuple[list[str], list[_Pending]]:
        """Mark ``signatures`` as being computed by the caller.

        Returns the ones now owned (to compute, then :meth:`finish`) and the pending records of
        those another thread is already computing (to wait for).
        """
        owned, others = [], []
        with self._lock:
            for sig in dict.fromkeys(signatures):
                pending = self._pending.get(sig)
                if pending is None:
                    self._pending[sig] = _Pending()
                    owned.append(sig)
                else:
                    others.append(pending)
        return owned, others

    def finish(self, signature: str, result: ImageEmbedding | None) -> None:
        """Release a claimed signature (``result`` None when computing it failed)."""
        with self._lock:
            pending = self._pending.pop(signature, None)
        if pending is not None:
            pending.result = result
            pending.done.set()

    def compute_owned(self, items: Sequence[tuple[str, np.ndarray]]) -> tuple[list[ImageEmbedding], int]:
        """Encode claimed (signature, image 0..255) items in one batch, store and release them.

        Returns the embeddings and how many were encoded (others were found cached meanwhile).
        """
        results: list[ImageEmbedding | None] = [None] * len(items)
        todo: list[tuple[int, str, np.ndarray]] = []
        try:
            for i, (sig, image) in enumerate(items):
                entry = self.lookup(sig)  # finished by another process or thread meanwhile?
                if entry is None:
                    todo.append((i, sig, image))
                else:
                    results[i] = entry
            if todo:
                encoded = self.encode([image for _, _, image in todo])
                for (i, sig, _), entry in zip(todo, encoded, strict=True):
                    results[i] = self.store(sig, entry)
                    self.stats.computed += 1
        finally:
            for (sig, _), result in zip(items, results, strict=True):
                self.finish(sig, result)
        return [r for r in results if r is not None], len(todo)

    def fetch(
        self,
        signature: str,
        image_255: Callable[[], np.ndarray],
        fallback: Callable[[str], ImageEmbedding | None] | None = None,
    ) -> ImageEmbedding:
        """The embedding for ``signature``: memory, disk, ``fallback`` (an imported store), else computed.

        A signature being computed by another thread is waited for, not computed twice.
        """
        while True:
            entry = self.lookup(signature)
            if entry is not None:
                return entry
            owned, others = self.claim([signature])
            if owned:
                break
            others[0].done.wait()
            if others[0].result is not None:
                return self._out(others[0].result)
            # the other computation failed or was abandoned: try ourselves
        try:
            entry = fallback(signature) if fallback is not None else None
            if entry is not None:
                self.stats.imported_hits += 1
                result = self.store(signature, entry)
                self.finish(signature, result)
                return result
            image = image_255()
        except BaseException:
            self.finish(signature, None)
            raise
        return self.compute_owned([(signature, image)])[0][0]
