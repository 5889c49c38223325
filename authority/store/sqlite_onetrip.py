"""SQLite's hot writes in one trip to aiosqlite's thread each.

aiosqlite runs every statement as its own hand-off to its thread and back (a queue put,
a thread wake-up, a loop wake-up through its self-pipe): a transaction of five
statements is seven trips. The writes made for every Refresh and client-credentials
Issue (the refresh itself, the Issue's events, and the outbox relay's claim,
publication mark and audit append of them) run here as one function each, inside a
``BEGIN IMMEDIATE`` transaction (shared with concurrent writes: ``sqlite_batch``), with
the same SQL and the same answers as the shared facets (which the other backends keep
using).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from authority.domain.audit import AuditRecord
from authority.domain.events import Event, OutboxEntry
from authority.store import rows
from authority.store.base import IssuedToken, RefreshStep, T
from authority.store.codec import Codec
from authority.store.database import Dialect
from authority.store.facets.clients import issued_groups, issued_sql
from authority.store.facets.common import EVENT_TAKEN, INSERT_EVENT
from authority.store.facets.outbox import (
    ANY_UNCLAIMED,
    INSERT_AUDIT,
    MARK_CLAIMED,
    MARK_PUBLISHED,
    claim_sql,
)
from authority.store.facets.sessions import (
    INSERT_REFRESH,
    REFRESH_STATE,
    consume_params,
    consume_sql,
    refresh_state_from_row,
)


def transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` between ``BEGIN IMMEDIATE`` (the write lock up front) and ``COMMIT``,
    rolled back if it raises; in the connection's own thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return result


class ThreadDatabase(Protocol):
    """What these writes need from ``SqliteDatabase``."""

    dialect: Dialect

    async def in_thread(
        self,
        work: Callable[[sqlite3.Connection], T],
        taken: Mapping[str, str] | None = None,
        *,
        begin: bool = True,
    ) -> T: ...


class OneTrip:
    """The overrides; mixed in before ``SqlStore``."""

    _db: ThreadDatabase
    _codec: Codec

    async def consume_refresh_with(self, token_hash: bytes, step: RefreshStep[T]) -> T | None:
        """The read, ``step`` and the write in one transaction. Under the write lock no
        other refresh can interleave, so the conditional UPDATE always wins here; it stays
        as the rule the backends share."""
        c, consume = self._codec, consume_sql(self._db.dialect)

        def work(conn: sqlite3.Connection) -> T | None:
            row = conn.execute(REFRESH_STATE, (token_hash,)).fetchone()
            result, rotation = step(None if row is None else refresh_state_from_row(c, row))
            if rotation is None:
                return result
            consumed = conn.execute(consume, consume_params(c, token_hash, rotation))
            if consumed.rowcount != 1:
                return None  # nothing was changed; committing nothing is a rollback
            conn.execute(INSERT_REFRESH, rows.refresh_params(c, rotation.successor))
            conn.executemany(INSERT_EVENT, [rows.event_params(c, e) for e in rotation.events])
            return result

        return await self._db.in_thread(work, EVENT_TAKEN)

    async def append_events(self, events: Sequence[Event]) -> None:
        c = self._codec
        params = [rows.event_params(c, e) for e in events]

        def work(conn: sqlite3.Connection) -> None:
            if params:
                conn.executemany(INSERT_EVENT, params)

        await self._db.in_thread(work, EVENT_TAKEN)

    async def record_issued(self, issued: Sequence[IssuedToken]) -> list[bool]:
        """As ``Clients.record_issued``, in one trip."""
        c, sql = self._codec, issued_sql(self._db.dialect)
        checks = [
            ((client_id, generation), (c.epoch(latest), client_id, generation, c.flag(False)))
            for client_id, generation, latest in issued_groups(issued)
        ]

        def work(conn: sqlite3.Connection) -> list[bool]:
            current = {key for key, params in checks if conn.execute(sql, params).fetchone()}
            committed = [(i.client_id, i.generation) in current for i in issued]
            kept = [i.event for i, ok in zip(issued, committed, strict=True) if ok]
            conn.executemany(INSERT_EVENT, [rows.event_params(c, e) for e in kept])
            return committed

        return await self._db.in_thread(work, EVENT_TAKEN)

    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """As ``Outbox.claim_unpublished``: an idle relay's look takes no write lock."""
        c, select = self._codec, claim_sql(self._db.dialect)
        at, until = c.instant(now), c.instant(now + lease)

        def claim(conn: sqlite3.Connection) -> list[rows.Row]:
            found = conn.execute(select, (at, limit)).fetchall()
            conn.executemany(MARK_CLAIMED, [(until, row[0]) for row in found])
            return found

        def work(conn: sqlite3.Connection) -> list[rows.Row]:
            if conn.execute(ANY_UNCLAIMED, (at,)).fetchone() is None:
                return []
            return transaction(conn, claim)

        found = await self._db.in_thread(work, begin=False)
        return [rows.entry_from_row(c, row) for row in found]

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        published = self._codec.instant(at)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(MARK_PUBLISHED, [(published, event_id) for event_id in ids])

        await self._db.in_thread(work)

    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        """How many were new (a redelivered event's record is not added twice)."""
        c = self._codec

        def work(conn: sqlite3.Connection) -> int:
            return sum(
                conn.execute(INSERT_AUDIT, rows.audit_params(c, record)).rowcount
                for record in records
            )

        return await self._db.in_thread(work)
