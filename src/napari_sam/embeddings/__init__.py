"""Per-slice SAM embeddings for 2D, 3D and nD stacks: memory LRU, disk store, precompute, tiling.

>>> cache = EmbeddingCache(model, memory_budget="2 GB", directory=default_directory())  # doctest: +SKIP
>>> view = cache.view(stack)                       # numpy, dask or zarr; (Z, Y, X), (T, Z, Y, X), ...
>>> view.precompute(start=(12,), progress=print)   # 12, 13, 11, 14, 10, ... skipping cached ones
>>> predictor, (dr, dc) = view.predictor((12,), points=[[300, 410]])
"""

from napari_sam.embeddings.cache import CacheStats, EmbeddingCache, default_directory, model_lock
from napari_sam.embeddings.disk import FORMAT_VERSION
from napari_sam.embeddings.errors import CacheWarning, EmbeddingMismatchError, StackIndexError
from napari_sam.embeddings.tiling import TileLayout
from napari_sam.embeddings.view import StackEmbeddings

__all__ = [
    "FORMAT_VERSION",
    "CacheStats",
    "CacheWarning",
    "EmbeddingCache",
    "EmbeddingMismatchError",
    "StackEmbeddings",
    "StackIndexError",
    "TileLayout",
    "default_directory",
    "model_lock",
]
