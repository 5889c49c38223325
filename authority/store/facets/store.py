"""One store object per backend: every facet, on the backend's one ``Database``."""

from __future__ import annotations

from authority.store.database import Database
from authority.store.facets.clients import Clients
from authority.store.facets.keys import Keys
from authority.store.facets.outbox import Audit, Events, Outbox
from authority.store.facets.principals import Credentials, Principals
from authority.store.facets.revocations import Lockouts, Revocations
from authority.store.facets.sessions import Sessions
from authority.store.facets.webhooks import Webhooks


class SqlStore(
    Keys,
    Principals,
    Credentials,
    Clients,
    Sessions,
    Revocations,
    Lockouts,
    Events,
    Outbox,
    Audit,
    Webhooks,
):
    """The ``Store`` over a ``Database``. Constructors do no I/O; ``open`` connects and
    migrates, ``close`` is idempotent."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._codec = db.codec

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.read() as conn:
            row = await conn.fetchrow("SELECT MAX(version) FROM schema_migrations")
        return int(row[0] or 0) if row is not None else 0
