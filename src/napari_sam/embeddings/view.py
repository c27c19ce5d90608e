"""StackEmbeddings: one stack bound to an EmbeddingCache (get, precompute, prefetch, predictor)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from napari_sam.embeddings._util import combine, content_hash, is_cancelled
from napari_sam.embeddings.prefetch import Prefetcher
from napari_sam.embeddings.stack import Region, StackSource
from napari_sam.embeddings.tiling import TileLayout
from napari_sam.predictor import ImageEmbedding, Predictor
from napari_sam.preprocess import IntensityNorm, to_network_range

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.embeddings.cache import EmbeddingCache
    from napari_sam.embeddings.zarr_store import ImportedStore

Unit = tuple[tuple[int, ...], int]  # (plane index, tile number)
ProgressCallback = Callable[[int, int], None]


class StackEmbeddings:
    """Embeddings of every plane of one stack, computed on demand through an :class:`EmbeddingCache`.

    Made by :meth:`EmbeddingCache.view`. Plane indices are tuples over the leading axes
    (``(z,)`` for (Z, Y, X), ``(t, z)`` for (T, Z, Y, X), ``()`` for a 2D image); an int is
    accepted for one leading axis.

    Attributes
    ----------
    index_shape : tuple of int
        Sizes of the leading axes.
    plane_shape : (Y, X)
    norm : IntensityNorm
        Used for every plane of the stack.
    layout : TileLayout
        One tile covering the plane, or overlapping tiles for planes above the tile threshold.
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        stack: Any,
        channel_axis: int | None = None,
        norm: IntensityNorm | None = None,
        *,
        tile_threshold: int = 2048,
        tile_size: int | None = None,
        halo: int | None = None,
    ) -> None:
        self.cache = cache
        self.source = StackSource(stack, channel_axis)
        if norm is not None and not isinstance(norm, IntensityNorm):
            raise TypeError(f"norm must be an IntensityNorm, got {type(norm).__name__}")
        self.norm = norm if norm is not None else self.source.sample_norm()
        tile_size = int(cache.model.img_size if tile_size is None else tile_size)
        halo = int(tile_size // 8 if halo is None else halo)
        if tile_size < 32 or halo < 0 or tile_size - 2 * halo < 16:
            raise ValueError(
                f"tile_size={tile_size} with halo={halo} leaves no core: use tile_size >= 32 and "
                "halo < tile_size / 2 - 8"
            )
        self.layout = TileLayout.build(self.source.plane_shape, tile_size, halo, int(tile_threshold))
        # dask arrays are immutable graphs: their plane hashes can be remembered
        self._memo: dict[Unit, str] | None = {} if hasattr(self.source.array, "compute") else None
        self._imported: list[ImportedStore] = []
        self._prefetcher = Prefetcher(self._prefetch_unit)

    # -- description ---------------------------------------------------------------------------
    @property
    def index_shape(self) -> tuple[int, ...]:
        return self.source.index_shape

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.source.plane_shape

    @property
    def is_tiled(self) -> bool:
        """True when planes are embedded as several tiles."""
        return self.layout.is_tiled

    def plane(self, index: Any) -> np.ndarray:
        """Plane ``index`` as (Y, X), or (Y, X, C) for colour images, read on its own."""
        return self.source.plane(index)

    def tiles(self, index: Any = None) -> list[Region]:
        """(row0, col0, row1, col1) of each tile of a plane (end exclusive); one for untiled planes."""
        return list(self.layout.tiles)

    def cores(self, index: Any = None) -> list[Region]:
        """The part each tile is responsible for, same order as :meth:`tiles`; they partition the plane."""
        return list(self.layout.cores)

    # -- signatures ----------------------------------------------------------------------------
    def _content(self, index: tuple[int, ...], tile: int) -> tuple[str, np.ndarray | None]:
        """Content hash of one unit's pixels, and the pixels when they had to be read."""
        if self._memo is not None and (index, tile) in self._memo:
            return self._memo[(index, tile)], None
        pixels = self._read(index, tile)
        digest = content_hash(pixels)
        if self._memo is not None:
            self._memo[(index, tile)] = digest
        return digest, pixels

    def _signature(self, digest: str, tile: int) -> str:
        r0, c0, r1, c1 = self.layout.tiles[tile]
        # the prefix is rebuilt each time, so a model whose weights hash or precision changes
        # never gets the embeddings of its former self
        prefix = self.cache.signature_prefix(self.norm)
        return combine(prefix, digest, f"tile={r0},{c0},{r1},{c1}")

    def _read(self, index: tuple[int, ...], tile: int) -> np.ndarray:
        return self.source.read(index, self.layout.tiles[tile] if self.layout.is_tiled else None)

    def _unit_key(self, index: tuple[int, ...], tile: int) -> tuple[str, np.ndarray | None]:
        digest, pixels = self._content(index, tile)
        return self._signature(digest, tile), pixels

    def _input(self, index: tuple[int, ...], tile: int, pixels: np.ndarray | None) -> np.ndarray:
        return to_network_range(self._read(index, tile) if pixels is None else pixels, self.norm)

    def _tile_arg(self, tile: int | None) -> int:
        if tile is None:
            if self.layout.is_tiled:
                raise ValueError(
                    f"planes of shape {self.plane_shape} are embedded as {len(self.layout.tiles)} tiles: "
                    "pass tile=... (see tiles()), or use predictor(index, points=..., box=...)"
                )
            return 0
        if not 0 <= int(tile) < len(self.layout.tiles):
            raise ValueError(f"tile {tile} does not exist: this plane has {len(self.layout.tiles)} tiles")
        return int(tile)

    def _imported_entry(self, signature: str) -> ImageEmbedding | None:
        for store in self._imported:
            entry = store.get(signature)
            if entry is not None:
                return entry
        return None

    def _available(self, signature: str) -> bool:
        return self.cache.contains(signature) or any(signature in s for s in self._imported)

    # -- embeddings ----------------------------------------------------------------------------
    def get(self, index: Any, tile: int | None = None) -> ImageEmbedding:
        """The embedding of plane ``index`` (of one tile of it for tiled planes), computed on a miss.

        Returns
        -------
        ImageEmbedding
            features (1, C, He, We) float32; do not modify it in place (it is shared).
        """
        idx = self.source.normalize_index(index)
        t = self._tile_arg(tile)
        sig, pixels = self._unit_key(idx, t)
        return self.cache.fetch(sig, lambda: self._input(idx, t, pixels), self._imported_entry)

    def ensure(self, index: Any) -> None:
        """Compute or load every tile of plane ``index`` into memory (``get`` for tiled planes too)."""
        idx = self.source.normalize_index(index)
        for t in range(len(self.layout.tiles)):
            self.get(idx, t)

    def is_cached(self, index: Any) -> bool:
        """True if every tile of plane ``index`` is in memory, on disk or in an imported store."""
        idx = self.source.normalize_index(index)
        return all(self._available(self._unit_key(idx, t)[0]) for t in range(len(self.layout.tiles)))

    def _ordered(self, indices: Iterable[Any] | None, start: Any) -> list[tuple[int, ...]]:
        planes = list(self.source.indices()) if indices is None else [self.source.normalize_index(i) for i in indices]
        planes = list(dict.fromkeys(planes))
        if start is not None:
            s = np.array(self.source.normalize_index(start))

            def outwards(idx: tuple[int, ...]) -> tuple[int, tuple[bool, ...]]:
                d = np.array(idx) - s
                return int(np.abs(d).sum()), tuple(bool(v) for v in d < 0)

            planes.sort(key=outwards)
        return planes

    def precompute(
        self,
        indices: Iterable[Any] | None = None,
        start: Any = None,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: Any = None,
    ) -> int:
        """Compute the embeddings of many planes ahead of time; cached ones are skipped.

        Parameters
        ----------
        indices : iterable of plane indices, optional
            Default: every plane.
        start : plane index, optional
            Compute this plane first, then its neighbours moving outwards (start, +1, -1, +2, ...).
        batch_size : int, optional
            Planes (tiles) per encoder call; default 1 on CPU (cancel then stops within one
            plane), 4 on GPUs.
        progress : callable(done, total), optional
            Called with the number of tiles done (computed or found) and the total.
        cancel : cancel token, optional
            Checked between encoder calls; on cancel, what is computed stays cached.

        Returns
        -------
        int
            Number of tiles (planes, for untiled stacks) computed by this call.
        """
        if batch_size is None:
            batch_size = 1 if self.cache.model.device.type == "cpu" else 4
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        units = [(idx, t) for idx in self._ordered(indices, start) for t in range(len(self.layout.tiles))]
        total, done, computed = len(units), 0, 0
        if progress is not None:
            progress(0, total)
        batch: list[tuple[str, tuple[int, ...], int, np.ndarray | None]] = []
        for position, (idx, t) in enumerate(units):
            if is_cancelled(cancel):
                return computed
            sig, pixels = self._unit_key(idx, t)
            if self._available(sig):
                done += 1
            else:
                batch.append((sig, idx, t, pixels))
            if len(batch) >= batch_size or (batch and position == len(units) - 1):
                if is_cancelled(cancel):
                    return computed
                computed += self._compute_batch(batch)
                done += len(batch)
                batch = []
            if progress is not None and (not batch):
                progress(done, total)
        return computed

    def _compute_batch(self, batch: Sequence[tuple[str, tuple[int, ...], int, np.ndarray | None]]) -> int:
        owned, others = self.cache.claim([b[0] for b in batch])
        owned_set = set(owned)
        items = []
        try:
            for sig, idx, t, pixels in batch:
                if sig in owned_set:
                    items.append((sig, self._input(idx, t, pixels)))
        except BaseException:
            for sig in owned:
                self.cache.finish(sig, None)
            raise
        encoded = self.cache.compute_owned(items)[1] if items else 0
        for pending in others:  # being computed by the prefetch worker: wait for it
            pending.done.wait()
        return encoded

    def prefetch(self, index: Any, radius: int = 2) -> None:
        """Compute plane ``index`` and its neighbours along the last leading axis in the background.

        Returns at once; a later :meth:`get` of a plane being computed waits for it instead of
        computing it twice. A new call replaces what is still queued.
        """
        idx = self.source.normalize_index(index)
        planes = [idx]
        if idx:
            size = self.index_shape[-1]
            for step in range(1, int(radius) + 1):
                for z in (idx[-1] + step, idx[-1] - step):
                    if 0 <= z < size:
                        planes.append((*idx[:-1], z))
        self._prefetcher.submit([(p, t) for p in planes for t in range(len(self.layout.tiles))])

    def _prefetch_unit(self, unit: Any) -> None:
        idx, t = unit
        sig, pixels = self._unit_key(idx, t)
        if sig not in self.cache.memory:
            self.cache.fetch(sig, lambda: self._input(idx, t, pixels), self._imported_entry)

    def wait_prefetch(self, timeout: float | None = None) -> bool:
        """Block until background prefetching is done; False on timeout."""
        return self._prefetcher.wait_idle(timeout)

    # -- prompting -----------------------------------------------------------------------------
    def predictor(
        self,
        index: Any,
        points: ArrayLike | None = None,
        box: ArrayLike | None = None,
        tile: int | None = None,
    ) -> tuple[Predictor, tuple[int, int]]:
        """A :class:`Predictor` set to plane ``index`` (or to the tile a prompt falls in).

        Parameters
        ----------
        points : (N, 2) (row, col) in plane pixels, optional
        box : (4,) (min_row, min_col, max_row, max_col) in plane pixels, optional
            Used only to choose the tile of a tiled plane.
        tile : int, optional
            Use this tile (see :meth:`tiles`) instead of routing.

        Returns
        -------
        predictor : Predictor
            Its image is the tile: shift prompts by ``-offset``, place masks back at ``+offset``.
        offset : (row, col)
            (0, 0) for untiled planes.
        """
        idx = self.source.normalize_index(index)
        if tile is None:
            pts = None if points is None or np.size(points) == 0 else np.asarray(points, dtype=np.float64)
            bx = None if box is None or np.size(box) == 0 else np.asarray(box, dtype=np.float64)
            tile = self.layout.route(pts, bx)
        t = self._tile_arg(tile)
        predictor = Predictor(self.cache.model)
        predictor.set_embedding(self.get(idx, t))
        predictor.norm = self.norm
        region = self.layout.tiles[t]
        return predictor, (region[0], region[1])

    def place_in_plane(self, mask: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
        """A tile's (h, w) mask -> a (Y, X) mask of the whole plane, placed at ``offset`` (row, col)."""
        mask = np.asarray(mask)
        r0, c0 = int(offset[0]), int(offset[1])
        h, w = self.plane_shape
        if mask.ndim != 2 or r0 < 0 or c0 < 0 or r0 + mask.shape[0] > h or c0 + mask.shape[1] > w:
            raise ValueError(f"a mask of shape {mask.shape} at offset {offset} does not fit planes of shape {(h, w)}")
        out = np.zeros((h, w), dtype=mask.dtype)
        out[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] = mask
        return out

    # -- exchange ------------------------------------------------------------------------------
    def export_zarr(self, path: str | Path, progress: ProgressCallback | None = None, cancel: Any = None) -> int:
        """Write every plane's embeddings and their signatures into one zarr store.

        Missing embeddings are computed. Returns the number of planes written (fewer on cancel;
        the store then records which are missing).
        """
        from napari_sam.embeddings.zarr_store import export_zarr

        return export_zarr(self, Path(path), progress=progress, cancel=cancel)

    def import_zarr(self, path: str | Path) -> int:
        """Use embeddings from a store written by :meth:`export_zarr` (read lazily, then cached).

        Raises
        ------
        EmbeddingMismatchError
            The store was computed for another image, model, normalisation or tiling (says which).

        Returns
        -------
        int
            Number of planes the store provides.
        """
        from napari_sam.embeddings.zarr_store import import_zarr

        store = import_zarr(self, Path(path))
        self._imported.append(store)
        return store.n_planes

    # -- lifetime ------------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Stop background prefetching (the embedding being computed finishes)."""
        self._prefetcher.close(timeout)

    def __enter__(self) -> StackEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"StackEmbeddings(index_shape={self.index_shape}, plane_shape={self.plane_shape}, "
            f"tiles={len(self.layout.tiles)}, norm={self.norm.signature()})"
        )
