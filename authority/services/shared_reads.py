"""Concurrent reads of one key share a database read, but only one that starts after
each of them arrived.

Client-credentials Issue reads the client row on every call, so a secret rotation, a
disable or a delete committed on any replica is seen by the next call. Under load many
calls for one client are in flight at once; each used to cost its own read (on SQLite,
a hop to the store's thread and back). Here a call never joins a read already running
(it may have started before the admin change committed); it waits for the next read of
that key, which starts when the running one ends, after every call waiting for it
arrived. So every caller sees the row as of some instant after its call began, the same
guarantee as reading alone, and a burst of N calls costs about two reads instead of N.

Nothing is kept once a key has no reader: this is not a cache. A read runs in a task of
its own, outside any one request's context (it serves several).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Slot(Generic[V]):
    running: list[asyncio.Future[V]]  # the callers of the read in progress
    queued: list[asyncio.Future[V]] | None = None  # the callers of the next read


class SharedReads(Generic[K, V]):
    """``get(key)``: the result of a ``read(key)`` that began after this call did."""

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._slots: dict[K, _Slot[V]] = {}

    async def get(self, key: K) -> V:
        # A future per caller: one giving up (its deadline) cancels only its own, and the
        # others' read goes on (no shield, which costs a future and two callbacks each).
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot([future])
            self._launch(key, slot.running)
        elif slot.queued is None:
            slot.queued = [future]
        else:
            slot.queued.append(future)
        return await future

    def _launch(self, key: K, waiters: list[asyncio.Future[V]]) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(key, waiters), context=contextvars.Context())
        task.add_done_callback(lambda _: self._next(key))

    async def _run(self, key: K, waiters: list[asyncio.Future[V]]) -> None:
        try:
            result = await self._read(key)
        except BaseException as exc:
            for future in waiters:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for future in waiters:
                if not future.done():
                    future.set_result(result)

    def _next(self, key: K) -> None:
        """The running read ended: start the queued one, or forget the key."""
        slot = self._slots[key]
        if slot.queued is None:
            del self._slots[key]
            return
        slot.running, slot.queued = slot.queued, None
        self._launch(key, slot.running)
