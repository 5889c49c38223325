"""The outbox (events written with the changes, relayed later) and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from authority.domain.audit import AuditQuery, AuditRecord
from authority.domain.events import Event, OutboxEntry
from authority.store import rows
from authority.store.database import Dialect
from authority.store.facets.common import EVENT_TAKEN, Facet

_SELECT_ENTRIES = f"SELECT sequence, {rows.EVENT_COLUMNS} FROM outbox"  # noqa: S608
_UNCLAIMED = " WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?)"
INSERT_AUDIT = (
    f"INSERT INTO audit_log ({rows.AUDIT_COLUMNS})"  # noqa: S608
    f" VALUES ({rows.marks(rows.AUDIT_COLUMNS)}) ON CONFLICT DO NOTHING"
)
ANY_UNCLAIMED = f"SELECT 1 FROM outbox{_UNCLAIMED} LIMIT 1"  # noqa: S608
MARK_CLAIMED = "UPDATE outbox SET claimed_until = ? WHERE sequence = ?"
MARK_PUBLISHED = (
    "UPDATE outbox SET published_at = ?, claimed_until = NULL WHERE id = ? AND published_at IS NULL"
)


def claim_sql(dialect: Dialect) -> str:
    """The oldest unclaimed events, up to a limit (``?``, ``?``: now, limit)."""
    return f"{_SELECT_ENTRIES}{_UNCLAIMED} ORDER BY sequence LIMIT ?{dialect.skip_locked}"


class Events(Facet):
    async def append_events(self, events: Sequence[Event]) -> None:
        async with self._db.write(EVENT_TAKEN) as conn:
            await self._insert_events(conn, events)


class Outbox(Facet):
    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """Claims never overlap: SQLite's write lock serialises them across processes;
        on PostgreSQL ``FOR UPDATE SKIP LOCKED`` gives relays claiming at the same moment
        disjoint batches instead of making them wait. The lease keeps the batch theirs
        after commit, until they mark it published or the lease lapses."""
        c = self._codec
        at = c.instant(now)
        async with self._db.read() as conn:
            # An idle relay polls often: look first, so it takes no write lock for nothing.
            pending = await conn.fetchrow(ANY_UNCLAIMED, at)
        if pending is None:
            return []
        async with self._db.write() as conn:
            found = await conn.fetch(claim_sql(self._db.dialect), at, limit)
            if found:
                await conn.executemany(
                    MARK_CLAIMED, [(c.instant(now + lease), row[0]) for row in found]
                )
        return [rows.entry_from_row(c, row) for row in found]

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        published = self._codec.instant(at)
        async with self._db.write() as conn:
            await conn.executemany(MARK_PUBLISHED, [(published, event_id) for event_id in ids])

    async def read_outbox(self, *, after: int = 0, limit: int = 1000) -> list[OutboxEntry]:
        async with self._db.read() as conn:
            found = await conn.fetch(
                _SELECT_ENTRIES + " WHERE sequence > ? ORDER BY sequence LIMIT ?", after, limit
            )
        return [rows.entry_from_row(self._codec, row) for row in found]

    async def outbox_published(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        async with self._db.read() as conn:
            found = await conn.fetch(
                "SELECT id FROM outbox WHERE published_at IS NOT NULL"  # noqa: S608 - only marks
                f" AND id IN ({', '.join('?' for _ in ids)})",
                *ids,
            )
        return {row[0] for row in found}

    async def outbox_depth(self) -> int:
        async with self._db.read() as conn:
            row = await conn.fetchrow("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        return 0 if row is None else int(row[0])

    async def prune_outbox(self, published_before: datetime) -> int:
        async with self._db.write() as conn:
            return await conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?",
                self._codec.instant(published_before),
            )


class Audit(Facet):
    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        added = 0
        async with self._db.write() as conn:
            for record in records:
                added += await conn.execute(INSERT_AUDIT, *rows.audit_params(self._codec, record))
        return added

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Conditions are fixed strings; only the values are parameters."""
        c = self._codec
        conditions, params = ["event_sequence > ?"], list[object]([query.after_sequence])
        for condition, value in (
            ("target_id = ?", query.target_id or None),
            ("action = ?", query.action or None),
            ("occurred_at >= ?", None if query.since is None else c.instant(query.since)),
            ("occurred_at < ?", None if query.until is None else c.instant(query.until)),
        ):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        async with self._db.read() as conn:
            found = await conn.fetch(
                f"SELECT {rows.AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(conditions)}"  # noqa: S608
                " ORDER BY event_sequence LIMIT ?",
                *params,
                query.limit,
            )
        return [rows.audit_from_row(c, row) for row in found]
