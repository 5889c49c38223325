"""SQLite's one-trip writes of concurrent calls in one transaction (group commit).

Every one-trip write (a refresh, an Issue's events, the relay's marks) used to be its
own ``BEGIN IMMEDIATE`` ... ``COMMIT``: a hop to aiosqlite's thread and back, and a
sync of the write-ahead log, per call. Under load those dominated a refresh. Here the
writes that arrive while a transaction is running wait for the next one, which runs
them all in one hop, each in its own savepoint, and commits once: each caller still
gets its answer only after its own writes committed, a write that raises is rolled back
to its savepoint alone (its neighbours are not touched), and a lone write waits for
nothing. Writes run in arrival order, one after the other, under the write lock, so
each sees every write before it exactly as it would in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from authority.domain.errors import Unavailable

T = TypeVar("T")
MAX_BATCH = 64
Translate = Callable[[Mapping[str, str] | None], contextlib.AbstractContextManager[None]]


@dataclass(slots=True)
class Write(Generic[T]):
    """One caller's write: run in its own context, its driver errors named by ``taken``."""

    work: Callable[[sqlite3.Connection], T]
    context: contextvars.Context
    taken: Mapping[str, str] | None
    future: asyncio.Future[T]


Outcome = tuple[bool, Any]  # (True, result) or (False, the exception the write raised)


def run_batch(
    conn: sqlite3.Connection, writes: Sequence[Write[Any]], translate: Translate
) -> list[Outcome]:
    """In the connection's thread: every write in its own savepoint of one ``BEGIN
    IMMEDIATE`` transaction, then one ``COMMIT``. Raises (and rolls back) when the
    transaction itself fails: then no write of the batch committed."""
    outcomes: list[Outcome] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            conn.execute("SAVEPOINT one_write")
            try:
                with translate(write.taken):
                    result = write.context.run(write.work, conn)
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (I/O error, disk full)
                conn.execute("ROLLBACK TO one_write")
                conn.execute("RELEASE one_write")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE one_write")
                outcomes.append((True, result))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return outcomes


RunInThread = Callable[[Sequence[Write[Any]]], Awaitable[list[Outcome]]]


class WriteQueue:
    """``submit(write)`` returns its result once the transaction it ran in committed."""

    def __init__(self, run: RunInThread, *, max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[Write[Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self,
        work: Callable[[sqlite3.Connection], T],
        taken: Mapping[str, str] | None,
        context: contextvars.Context,
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(Write(work, context, taken, future))
        if self._task is None:
            # Its own context: the drain serves several requests.
            self._task = loop.create_task(self._drain(), context=contextvars.Context())
        # Not shielded: a caller cancelled before its batch starts is left out of it, as
        # one cancelled while waiting for the store's lock always was.
        return await future

    async def _drain(self) -> None:
        batch: list[Write[Any]] = []
        try:
            while self._pending:
                taken = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                batch = [w for w in taken if not w.future.done()]
                if batch:
                    await self._commit(batch)
                batch = []
        finally:
            self._task = None
            # Cancelled (shutdown): nobody must wait forever for a commit that won't come
            # (a batch already in the thread may still commit: its outcome is unknown).
            for write in batch + self._pending:
                _fail(write, Unavailable("the store stopped; the write may not have committed"))
            self._pending.clear()

    async def _commit(self, batch: list[Write[Any]]) -> None:
        try:
            outcomes = await self._run(batch)
        except Exception as exc:
            for write in batch:
                _fail(write, _whole_batch_error(exc))
            return
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if write.future.done():
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)


def _fail(write: Write[Any], error: BaseException) -> None:
    if not write.future.done():
        write.future.set_exception(error)


def _whole_batch_error(exc: Exception) -> BaseException:
    """A fresh error per caller (one exception object raised in many tasks would collect
    all their tracebacks); the store's own errors (already translated) say it best."""
    if isinstance(exc, Unavailable):
        fresh: BaseException = Unavailable(str(exc))
    else:
        fresh = Unavailable(f"the SQLite store is unavailable: {exc}")
    fresh.__cause__ = exc
    return fresh
