"""The signing-key ring: reads, and transactions under the key-ring lock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from authority.domain.errors import NotFound
from authority.domain.events import Event
from authority.domain.keys import KeyRecord, KeyUpdate, apply_update
from authority.store import rows
from authority.store.base import KeyRingTransaction
from authority.store.codec import Codec
from authority.store.database import Connection, Database
from authority.store.facets.common import EVENT_TAKEN, INSERT_EVENT, Facet

_INSERT_KEY = rows.insert("signing_keys", rows.KEY_COLUMNS)


async def _select_keys(db: Database, conn: Connection) -> list[KeyRecord]:
    """In byte order of kid, whatever the database's collation."""
    found = await conn.fetch(
        f"SELECT {rows.KEY_COLUMNS} FROM signing_keys"  # noqa: S608
        f" ORDER BY published_at, kid{db.dialect.byte_order}"
    )
    return [rows.key_from_row(db.codec, row) for row in found]


class _KeyRing:
    """The key-ring operations, inside the store's open, locked write transaction."""

    def __init__(self, db: Database, conn: Connection) -> None:
        self._db = db
        self._codec: Codec = db.codec
        self._conn = conn

    async def list_keys(self) -> list[KeyRecord]:
        return await _select_keys(self._db, self._conn)

    async def insert_key(self, key: KeyRecord) -> None:
        taken = {"signing_keys.kid": f"a key with kid {key.kid!r} already exists"}
        with self._db.translated(taken):
            await self._conn.execute(_INSERT_KEY, *rows.key_params(self._codec, key))

    async def update_key(self, update: KeyUpdate) -> None:
        """Reuse ``apply_update`` so the semantics cannot drift from the domain's."""
        row = await self._conn.fetchrow(
            f"SELECT {rows.KEY_COLUMNS} FROM signing_keys WHERE kid = ?",  # noqa: S608
            update.kid,
        )
        if row is None:
            raise NotFound(f"no key with kid {update.kid!r}")
        updated = apply_update(rows.key_from_row(self._codec, row), update)
        c = self._codec
        await self._conn.execute(
            "UPDATE signing_keys SET activates_at = ?, retires_at = ?, compromised_at = ?,"
            " wrapped_private_key = CASE WHEN ? THEN wrapped_private_key END"
            " WHERE kid = ?",
            c.instant(updated.activates_at),
            None if updated.retires_at is None else c.instant(updated.retires_at),
            None if updated.compromised_at is None else c.instant(updated.compromised_at),
            c.flag(updated.compromised_at is None),
            update.kid,
        )

    async def delete_keys(self, kids: tuple[str, ...]) -> None:
        await self._conn.executemany(
            "DELETE FROM signing_keys WHERE kid = ?", [(kid,) for kid in kids]
        )

    async def add_event(self, event: Event) -> None:
        with self._db.translated(EVENT_TAKEN):
            await self._conn.execute(INSERT_EVENT, *rows.event_params(self._codec, event))

    async def rewrap_key(self, kid: str, wrapped_private_key: bytes, kek_id: str) -> None:
        """The ``compromised_at IS NULL`` guard keeps a compromised key without material."""
        if await self._conn.fetchrow("SELECT 1 FROM signing_keys WHERE kid = ?", kid) is None:
            raise NotFound(f"no key with kid {kid!r}")
        await self._conn.execute(
            "UPDATE signing_keys SET wrapped_private_key = ?, kek_id = ?"
            " WHERE kid = ? AND compromised_at IS NULL",
            bytes(wrapped_private_key),
            kek_id,
            kid,
        )


class Keys(Facet):
    async def list_keys(self) -> list[KeyRecord]:
        async with self._db.read() as conn:
            return await _select_keys(self._db, conn)

    async def key_ring_generation(self) -> int:
        async with self._db.read() as conn:
            row = await conn.fetchrow("SELECT generation FROM key_ring_state")
        assert row is not None  # the migration inserts the one row
        return int(row[0])

    @asynccontextmanager
    async def key_ring_transaction(self) -> AsyncIterator[KeyRingTransaction]:
        """The generation bump commits with the changes."""
        async with self._db.write(key_ring=True) as conn:
            yield _KeyRing(self._db, conn)
            await conn.execute("UPDATE key_ring_state SET generation = generation + 1")
