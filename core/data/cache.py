"""The per-process cache of decoded data set arrays, bounded by bytes (LRU).

A worker trains many runs on a few data sets: keeping their decoded arrays saves the file read
and checksum on every run. The cache holds at most ``limit`` bytes (the sum of ``nbytes`` of
what it holds); adding past that evicts the least recently used entries first, and one entry
larger than the whole limit is not kept at all. ``limit=0`` turns caching off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

__all__ = ["DEFAULT_CACHE_BYTES", "ArrayCache"]

DEFAULT_CACHE_BYTES = 512 * 2**20  # MNIST, Fashion-MNIST and CIFAR-10 together: ~300 MB


class ArrayCache:
    """Tuples of arrays by key, least recently used evicted beyond ``limit`` bytes."""

    def __init__(self, limit: int = DEFAULT_CACHE_BYTES) -> None:
        self._items: OrderedDict[Hashable, tuple[np.ndarray, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = int(limit)
        self.nbytes = 0

    def get(self, key: Hashable) -> tuple[np.ndarray, ...] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: Hashable, arrays: tuple[np.ndarray, ...]) -> None:
        size = sum(int(a.nbytes) for a in arrays)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= sum(int(a.nbytes) for a in old)
            if size <= self.limit:
                self._items[key] = arrays
                self.nbytes += size
            self._evict()

    def set_limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"cache limit must be >= 0 bytes, got {limit}")
        with self._lock:
            self.limit = int(limit)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def keys(self) -> list[Hashable]:
        """Keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def _evict(self) -> None:
        while self.nbytes > self.limit and self._items:
            _, arrays = self._items.popitem(last=False)
            self.nbytes -= sum(int(a.nbytes) for a in arrays)
