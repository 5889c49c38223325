"""A store that reports the outcome of every write to a ``WriteHealth`` tracker.

It wraps any ``Store`` without knowing its methods one by one: a method is a write by
its name (``create_``, ``update_``, ``record_``..., and the key-ring transaction). A
write that raises ``Unavailable`` (disk full, read-only, connection lost) is a failure.
A write that reports it changed nothing (an empty list, 0 or False: the relay's idle
claim, a prune with nothing due) is no evidence either way, since a full disk lets a
transaction that dirties no page commit; any other return is a success. Other domain
errors (a name taken, a missing row) say nothing about whether the store can write.
Reads pass through untouched.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from authority.domain.errors import Unavailable
from authority.domain.write_health import STORE, WriteHealth
from authority.store.base import KeyRingTransaction, Store

WRITE_PREFIXES = (
    "add_",
    "append_",
    "change_",
    "claim_",
    "consume_",
    "create_",
    "delete_",
    "mark_",
    "prune",
    "record_",
    "rehash_",
    "rewrap_",
    "set_",
    "take_",
    "update_",
)


def is_write(name: str) -> bool:
    return name.startswith(WRITE_PREFIXES)


def _changed_nothing(result: object) -> bool:
    if isinstance(result, bool):
        return not result
    if isinstance(result, int):
        return result == 0
    if isinstance(result, list | tuple | set | frozenset | dict):
        return not result
    return False


class _ObservedStore:
    def __init__(self, store: Store, health: WriteHealth) -> None:
        self._store = store
        self._health = health

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name == "key_ring_transaction":
            return self._key_ring_transaction
        if not is_write(name) or not callable(attribute):
            return attribute
        observed = self._observed(attribute)
        # Kept, so the next call finds it without building the wrapper again (a method of
        # the wrapped store never changes).
        setattr(self, name, observed)
        return observed

    def _observed(self, write: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(write)
        async def observed(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await write(*args, **kwargs)
            except Unavailable:
                self._health.record(STORE, ok=False)
                raise
            if not _changed_nothing(result):
                self._health.record(STORE, ok=True)
            return result

        return observed

    @asynccontextmanager
    async def _key_ring_transaction(self) -> AsyncIterator[KeyRingTransaction]:
        try:
            async with self._store.key_ring_transaction() as tx:
                yield tx
        except Unavailable:
            self._health.record(STORE, ok=False)
            raise
        self._health.record(STORE, ok=True)


def observed(store: Store, health: WriteHealth) -> Store:
    """``store``, reporting its writes to ``health``."""
    return cast(Store, _ObservedStore(store, health))
