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
its neighbours; each caller gets its own event's outcome. The append may also refuse some
items without failing (a token whose client changed meanwhile: ``record_issued``), by
answering one flag per item; the caller of a refused item gets False, its neighbours'
commit goes on. Appends run in a task of their own, outside any one request's context
(they serve several).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from authority.domain.errors import Unavailable

I = TypeVar("I")  # noqa: E741 - an item
# Commits the items; None: all of them, else one flag per item (False: refused, unwritten).
Append = Callable[[Sequence[I]], Awaitable[Sequence[bool] | None]]
MAX_BATCH = 256


def _retrieve(future: asyncio.Future[bool]) -> None:
    """Mark an outcome seen, so an append every caller abandoned logs no 'never retrieved'."""
    if not future.cancelled():
        future.exception()


class GroupCommit(Generic[I]):
    """``append(item)`` returns once ``item`` is committed (True) or refused (False),
    sharing the transaction."""

    def __init__(self, append: Append[I], *, max_batch: int = MAX_BATCH) -> None:
        self._append = append
        self._max_batch = max_batch
        self._pending: list[tuple[I, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, event: I) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((event, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), context=contextvars.Context())
        # The future is this caller's alone: giving up (its deadline) cancels only it, and
        # its neighbours' commit goes on (no shield, which costs a future and two callbacks).
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[I, asyncio.Future[bool]]] = []
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

    async def _commit(self, batch: list[tuple[I, asyncio.Future[bool]]]) -> None:
        try:
            committed = await self._append([event for event, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for event, future in batch:  # alone, so each gets its own verdict
                try:
                    alone = await self._append((event,))
                except Exception as error:
                    _settle(future, error)
                else:
                    _settle(future, None, alone is None or alone[0])
        else:
            for index, (_, future) in enumerate(batch):
                _settle(future, None, committed is None or committed[index])


def _settle(future: asyncio.Future[bool], error: Exception | None, ok: bool = True) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(ok)
    else:
        future.set_exception(error)
