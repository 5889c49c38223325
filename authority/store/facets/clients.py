"""OAuth clients."""

from __future__ import annotations

from collections.abc import Sequence

from authority.domain.clients import Client
from authority.domain.events import Event
from authority.store import rows
from authority.store.facets.common import EVENT_TAKEN, Facet

_INSERT = rows.insert("clients", rows.CLIENT_COLUMNS)


class Clients(Facet):
    async def create_client(self, client: Client, *, events: Sequence[Event] = ()) -> None:
        taken = {"clients.id": f"a client with id {client.id!r} already exists", **EVENT_TAKEN}
        params = rows.client_params(self._codec, client)
        async with self._db.write(taken) as conn:
            await conn.execute(_INSERT, *params)
            await self._insert_events(conn, events)

    async def get_client(self, client_id: str) -> Client | None:
        async with self._db.read() as conn:
            row = await conn.fetchrow(
                f"SELECT {rows.CLIENT_COLUMNS} FROM clients WHERE id = ?",  # noqa: S608
                client_id,
            )
        return None if row is None else rows.client_from_row(self._codec, row)

    async def update_client(
        self,
        client_id: str,
        *,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        events: Sequence[Event] = (),
    ) -> Client | None:
        c = self._codec
        async with self._db.write(EVENT_TAKEN) as conn:
            row = await conn.fetchrow(
                "UPDATE clients SET secret_hash = COALESCE(?, secret_hash),"  # noqa: S608
                " disabled = COALESCE(?, disabled),"
                " allowed_claims = COALESCE(?, allowed_claims),"
                " allowed_sensitive_claims = COALESCE(?, allowed_sensitive_claims)"
                f" WHERE id = ? RETURNING {rows.CLIENT_COLUMNS}",
                None if secret_hash is None else bytes(secret_hash),
                None if disabled is None else c.flag(disabled),
                None if allowed_claims is None else c.strings(sorted(allowed_claims)),
                None if sensitive_claims is None else c.strings(sorted(sensitive_claims)),
                client_id,
            )
            if row is not None:
                await self._insert_events(conn, events)
        return None if row is None else rows.client_from_row(c, row)

    async def delete_client(self, client_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._db.write(EVENT_TAKEN) as conn:
            deleted = await conn.execute("DELETE FROM clients WHERE id = ?", client_id)
            if deleted:
                await self._insert_events(conn, events)
        return deleted > 0
