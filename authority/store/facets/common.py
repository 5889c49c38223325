"""What every facet shares: the database, its codec, and writing outbox events."""

from __future__ import annotations

from collections.abc import Sequence

from authority.domain.events import Event
from authority.domain.revocation import Revocation
from authority.store import rows
from authority.store.codec import Codec
from authority.store.database import Connection, Database

EVENT_TAKEN = {"outbox.id": "an event with this id is already in the outbox"}
INSERT_EVENT = rows.insert("outbox", rows.EVENT_COLUMNS)


class Facet:
    """A part of the store: its methods run on the one ``Database`` of the store."""

    _db: Database
    _codec: Codec

    async def _insert_events(self, conn: Connection, events: Sequence[Event]) -> None:
        """Inside the caller's transaction: the events commit or roll back with the change."""
        if events:
            await conn.executemany(
                INSERT_EVENT, [rows.event_params(self._codec, e) for e in events]
            )

    async def _upsert_revocation(
        self, conn: Connection, revocation: Revocation, recorded_at: object
    ) -> None:
        """Record ``revocation``, widening (never narrowing) one already recorded."""
        greatest = self._db.dialect.greatest
        await conn.execute(
            f"INSERT INTO revocations ({rows.REVOCATION_COLUMNS}, recorded_at)"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO UPDATE SET"
            f" issued_before = {greatest}(revocations.issued_before, excluded.issued_before),"
            f" expires_at = {greatest}(revocations.expires_at, excluded.expires_at),"
            f" recorded_at = {greatest}(revocations.recorded_at, excluded.recorded_at)",
            *rows.revocation_params(self._codec, revocation, recorded_at),
        )
