"""Export a stack's embeddings to one zarr store, and use such a store for the same image later.

Store layout (zarr v3, or v2 with zarr 2)::

    attrs["napari_sam_embeddings"]  model key and name, precision, img_size, normalisation,
                                    hash algorithm, index and plane shapes, tiles, dtype, format
    features  index_shape + (n_tiles, C, He, We)   float32 (float16 with half_precision)
    content   index_shape + (n_tiles, 16)          uint8, content hash of each tile's pixels
    filled    index_shape + (n_tiles,)             bool, False where export was cancelled

Compute on a workstation or cluster, annotate on a laptop: the laptop's :meth:`import_zarr`
checks model, normalisation, shapes and every plane's pixels before using the store.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_sam.embeddings._util import HASH_ALGORITHM, is_cancelled
from napari_sam.embeddings.disk import FORMAT_VERSION
from napari_sam.embeddings.errors import EmbeddingMismatchError
from napari_sam.predictor import ImageEmbedding
from napari_sam.preprocess import resized_shape

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.embeddings.view import StackEmbeddings

ATTR = "napari_sam_embeddings"


def _metadata(view: StackEmbeddings) -> dict[str, Any]:
    cache, model = view.cache, view.cache.model
    return {
        "format": FORMAT_VERSION,
        "model_key": cache.model_key,
        "model_name": str(getattr(model, "name", "unnamed")),
        "precision": str(getattr(model, "precision", "fp32")),
        "img_size": int(model.img_size),
        "norm": view.norm.signature(),
        "hash_algorithm": HASH_ALGORITHM,
        "index_shape": list(view.index_shape),
        "plane_shape": list(view.plane_shape),
        "tiles": [list(t) for t in view.layout.tiles],
        "dtype": "float16" if cache.half_precision else "float32",
        "embedding_shape": list(model.embedding_shape),
        "complete": False,
    }


def _create(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> Any:
    if hasattr(group, "create_array"):  # zarr 3
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, compressors=None, fill_value=0
        )
    return group.create_dataset(  # pragma: no cover - zarr 2
        name, shape=shape, chunks=chunks, dtype=dtype, compressor=None, fill_value=0
    )


def _write(group: Any, name: str, data: np.ndarray) -> None:
    if hasattr(group, "create_array"):  # zarr 3
        group.create_array(name, data=data)
    else:  # pragma: no cover - zarr 2
        group.array(name, data)


def export_zarr(
    view: StackEmbeddings,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
) -> int:
    """See :meth:`StackEmbeddings.export_zarr`."""
    import zarr

    if path.exists() and any(path.iterdir()):
        try:
            existing = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception:  # any failure to read it means "not our store"
            existing = {}
        if ATTR not in existing:
            raise ValueError(
                f"{path} exists and is not a napari-sam embeddings store; choose a new path "
                "(it is never overwritten)"
            )
    meta = _metadata(view)
    n_tiles = len(view.layout.tiles)
    lead = view.index_shape
    group = zarr.open_group(str(path), mode="w")
    group.attrs[ATTR] = meta
    emb_shape = tuple(meta["embedding_shape"])
    features = _create(
        group, "features", (*lead, n_tiles, *emb_shape), (*(1,) * len(lead), 1, *emb_shape), meta["dtype"]
    )
    content = np.zeros((*lead, n_tiles, 16), dtype=np.uint8)
    filled = np.zeros((*lead, n_tiles), dtype=bool)
    total, written = view.source.n_planes, 0
    if progress is not None:
        progress(0, total)
    try:
        for idx in view.source.indices():
            if is_cancelled(cancel):
                break
            for t in range(n_tiles):
                digest, pixels = view._content(idx, t)
                sig = view._signature(digest, t)
                entry = view.cache.fetch(sig, partial(view._input, idx, t, pixels), view._imported_entry)
                features[(*idx, t)] = entry.features[0].numpy().astype(meta["dtype"])
                content[(*idx, t)] = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)
                filled[(*idx, t)] = True
            written += 1
            if progress is not None:
                progress(written, total)
    finally:
        _write(group, "content", content)
        _write(group, "filled", filled)
        meta["complete"] = bool(filled.all())
        group.attrs[ATTR] = meta
    return written


class ImportedStore:
    """A validated store, read lazily: signature -> embedding."""

    def __init__(
        self,
        features: Any,
        positions: dict[str, tuple[int, ...]],
        sizes: list[tuple[tuple[int, int], tuple[int, int]]],
    ) -> None:
        self._features = features
        self._positions = positions
        self._sizes = sizes
        self.n_planes = len({pos[:-1] for pos in positions.values()})

    def __contains__(self, signature: str) -> bool:
        return signature in self._positions

    def get(self, signature: str) -> ImageEmbedding | None:
        pos = self._positions.get(signature)
        if pos is None:
            return None
        try:
            array = np.asarray(self._features[pos])
        except (OSError, KeyError, ValueError):  # the store was moved or damaged: recompute
            return None
        original, inner = self._sizes[pos[-1]]
        return ImageEmbedding(torch.from_numpy(np.array(array, dtype=np.float32))[None], original, inner)


def _check(meta: dict[str, Any], ours: dict[str, Any], path: Path) -> None:
    def fail(what: str) -> None:
        raise EmbeddingMismatchError(f"the embeddings in {path} {what}; recompute them for this image and model")

    if meta.get("format") != ours["format"]:
        fail(f"use cache format {meta.get('format')}, this version of napari-sam reads format {ours['format']}")
    if meta.get("model_key") != ours["model_key"]:
        fail(f"were computed with a different model ({meta.get('model_name')}, {meta.get('model_key')}) "
             f"than this one ({ours['model_name']}, {ours['model_key']})")
    if meta.get("img_size") != ours["img_size"] or meta.get("precision") != ours["precision"]:
        fail(f"were computed at input size {meta.get('img_size')} in {meta.get('precision')}, "
             f"this model runs at {ours['img_size']} in {ours['precision']}")
    if meta.get("index_shape") != ours["index_shape"] or meta.get("plane_shape") != ours["plane_shape"]:
        fail(f"belong to an image of {meta.get('index_shape')} planes of shape {meta.get('plane_shape')}, "
             f"this image has {ours['index_shape']} planes of shape {ours['plane_shape']}")
    if meta.get("norm") != ours["norm"]:
        fail(f"were computed with a different intensity normalisation ({meta.get('norm')}, this image: "
             f"{ours['norm']}); pass the same norm= to cache.view() if the image is the same")
    if meta.get("tiles") != ours["tiles"]:
        fail("use a different tiling of the planes (tile_size / halo / tile_threshold)")
    if meta.get("dtype") != ours["dtype"]:
        fail(f"are stored as {meta.get('dtype')} but this cache keeps {ours['dtype']} "
             "(match half_precision= of the EmbeddingCache)")
    if meta.get("hash_algorithm") != ours["hash_algorithm"]:
        fail(f"were checked with {meta.get('hash_algorithm')} but this installation uses {ours['hash_algorithm']} "
             "(install xxhash on both machines)")


def import_zarr(view: StackEmbeddings, path: Path) -> ImportedStore:
    """See :meth:`StackEmbeddings.import_zarr`."""
    import zarr

    if not path.exists():
        raise FileNotFoundError(f"no embeddings store at {path}")
    try:
        group = zarr.open_group(str(path), mode="r")
        meta = dict(group.attrs).get(ATTR)
    except Exception as err:  # zarr raises several types for "not a store"
        raise ValueError(f"{path} is not a zarr store ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is a zarr store but not one written by napari-sam export_zarr")
    _check(meta, _metadata(view), path)
    content = np.asarray(group["content"][...])  # type: ignore[index]
    filled = np.asarray(group["filled"][...])  # type: ignore[index]
    positions: dict[str, tuple[int, ...]] = {}
    differing = []
    for idx in view.source.indices():
        for t in range(len(view.layout.tiles)):
            if not filled[(*idx, t)]:
                continue
            digest, _ = view._content(idx, t)
            if bytes.fromhex(digest) != content[(*idx, t)].tobytes():
                differing.append(idx)
                break
            positions[view._signature(digest, t)] = (*idx, t)
    if differing:
        n_filled = int(filled.reshape(*view.index_shape, -1).any(axis=-1).sum()) if view.index_shape else 1
        where = f"plane {differing[0]}" if differing[0] else "the image"
        raise EmbeddingMismatchError(
            f"the embeddings in {path} were computed for a different image: {len(differing)} of {n_filled} "
            f"planes differ (first: {where}); open the image they belong to, or recompute"
        )
    sizes = [((r1 - r0, c1 - c0), resized_shape(r1 - r0, c1 - c0, view.cache.model.img_size))
             for r0, c0, r1, c1 in view.layout.tiles]
    return ImportedStore(group["features"], positions, sizes)
