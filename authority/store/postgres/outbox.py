"""The relay's claim and publication mark on PostgreSQL, one statement each.

The shared facet claims in a transaction (BEGIN, a look, the SELECT, one UPDATE per
event, COMMIT) and marks in another (BEGIN, one UPDATE per event, COMMIT): round trips
and row-by-row statements for every batch. Here each is one statement, so its own
transaction: the claim locks its rows with ``FOR UPDATE SKIP LOCKED`` (relays claiming
at the same moment get disjoint batches, as before) and leases them in the same UPDATE;
the mark takes the batch's ids as one array. RETURNING has no order, so the claimed
batch is sorted by sequence here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from authority.domain.events import OutboxEntry
from authority.store import rows
from authority.store.facets.outbox import Outbox

_CLAIM = (
    "WITH due AS (SELECT sequence FROM outbox"  # noqa: S608 - fixed names only
    " WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until <= $1)"
    " ORDER BY sequence LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE outbox o SET claimed_until = $3 FROM due WHERE o.sequence = due.sequence"
    f" RETURNING {rows.prefixed('o', 'sequence, ' + rows.EVENT_COLUMNS)}"
)
_MARK_PUBLISHED = (
    "UPDATE outbox SET published_at = $1, claimed_until = NULL"
    " WHERE id = ANY($2::text[]) AND published_at IS NULL"
)


class PostgresOutbox(Outbox):
    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """As ``Outbox.claim_unpublished``, in one statement (an idle relay's finds
        nothing to lock and writes nothing)."""
        c = self._codec
        async with self._db.read() as conn:
            found = await conn.fetch(_CLAIM, c.instant(now), limit, c.instant(now + lease))
        entries = [rows.entry_from_row(c, row) for row in found]
        entries.sort(key=lambda entry: entry.sequence)
        return entries

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        if not ids:
            return
        async with self._db.read() as conn:
            await conn.execute(_MARK_PUBLISHED, self._codec.instant(at), list(ids))
