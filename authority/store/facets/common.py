"""What every facet shares: the database, its codec, and writing outbox events."""

from __future__ import annotations

from collections.abc import Sequence

from authority.domain.events import Event
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
