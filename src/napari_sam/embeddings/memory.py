"""The memory tier: embeddings kept in RAM, least recently used first out, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from napari_sam.predictor import ImageEmbedding


def tensor_bytes(tensor: torch.Tensor) -> int:
    return int(tensor.numel() * tensor.element_size())


class MemoryLRU:
    """A thread-safe map signature -> embedding that never holds more than ``budget`` bytes.

    Parameters
    ----------
    budget : int
        Bytes. 0 keeps nothing. An entry larger than the budget is not kept.
    """

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self._items: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> ImageEmbedding | None:
        """The embedding for ``key`` (marking it as recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: ImageEmbedding) -> None:
        """Keep ``value``, dropping the least recently used entries until it fits."""
        size = tensor_bytes(value.features)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= tensor_bytes(old.features)
            if size > self.budget:
                return
            while self._items and self._bytes + size > self.budget:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= tensor_bytes(dropped.features)
            self._items[key] = value
            self._bytes += size

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= tensor_bytes(old.features)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
