"""Events of concurrent calls appended in one transaction (group commit).

A client-credentials Issue writes nothing but its ``token.issued`` event, and it must be
committed before the token is returned (the outbox: no token without its audit record).
One transaction per call costs its own BEGIN, insert and COMMIT (a round trip or more to
the database, and a sync of its log); under load that dominated the call. Here
the events of calls that arrive while a transaction is running wait for the next one,
which appends them all: each caller still returns only after its own event committed,
and a burst of N calls costs about two transactions instead of N. A lone call waits for
nothing: its transaction starts at once.

A transaction that fails is retried one event at a time, so one bad event never fails
its neighbours; each caller gets its own event's outcome. Appends run in a task of their
own, outside any one request's context (they serve several).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence

from authority.domain.errors import Unavailable
from authority.domain.events import Event

Append = Callable[[Sequence[Event]], Awaitable[None]]
MAX_BATCH = 256


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark an outcome seen, so an append every caller abandoned logs no 'never retrieved'."""
    if not future.cancelled():
        future.exception()


class GroupCommit:
    """``append(event)`` returns once ``event`` is committed, sharing the transaction."""

    def __init__(self, append: Append, *, max_batch: int = MAX_BATCH) -> None:
        self._append = append
        self._max_batch = max_batch
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((event, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), context=contextvars.Context())
        # The future is this caller's alone: giving up (its deadline) cancels only it, and
        # its neighbours' commit goes on (no shield, which costs a future and two callbacks).
        await future

    async def _drain(self) -> None:
        batch: list[tuple[Event, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
        finally:
            self._task = None
            # Cancelled (shutdown): nobody must wait forever for a commit that won't come.
            for _, future in batch + self._pending:
                if not future.done():
                    future.set_exception(Unavailable("the event was not written"))
            self._pending.clear()

    async def _commit(self, batch: list[tuple[Event, asyncio.Future[None]]]) -> None:
        try:
            await self._append([event for event, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for event, future in batch:  # alone, so each gets its own verdict
                try:
                    await self._append((event,))
                except Exception as alone:
                    _settle(future, alone)
                else:
                    _settle(future, None)
        else:
            for _, future in batch:
                _settle(future, None)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
