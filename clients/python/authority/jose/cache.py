"""The bound every in-memory verification cache shares."""

from __future__ import annotations

from itertools import islice
from typing import TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dict of at most ``max_size`` entries: storing into a full one first evicts the
    oldest tenth, in insertion order. Amortised O(1), no LRU bookkeeping, and reads are
    plain dict reads, so a cache hit on the Verify hot path pays nothing for the bound."""

    __slots__ = ("max_size",)

    def __init__(self, max_size: int) -> None:
        super().__init__()
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size

    def __setitem__(self, key: K, value: V) -> None:
        if len(self) >= self.max_size:
            for stale in list(islice(self, max(1, self.max_size // 10))):
                del self[stale]
        dict.__setitem__(self, key, value)  # not super(): no proxy object per store
