"""OAuth clients, and their changes ordered with the tokens minted for them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from authority.domain.clients import Client
from authority.domain.events import Event
from authority.domain.revocation import Revocation, RevocationKind
from authority.store import rows
from authority.store.base import ClientChange, IssuedToken
from authority.store.database import Connection, Dialect
from authority.store.facets.common import EVENT_TAKEN, Facet

_INSERT = rows.insert("clients", rows.CLIENT_COLUMNS)
_CHANGE = (
    "UPDATE clients SET secret_hash = COALESCE(?, secret_hash),"  # noqa: S608
    " disabled = COALESCE(?, disabled),"
    " allowed_claims = COALESCE(?, allowed_claims),"
    " allowed_sensitive_claims = COALESCE(?, allowed_sensitive_claims),"
    f" generation = generation + 1 WHERE id = ? RETURNING {rows.CLIENT_READ}, issued_until"
)
# The latest issue instant of the sessions a client revocation has just ended (their own
# and their refresh tokens'): the minter keeps every token's `iat` at or before them.
_ENDED_LATEST = (
    "SELECT max(s.created_at), max(r.issued_at) FROM sessions s"
    " LEFT JOIN refresh_tokens r ON r.session_id = s.id"
    " WHERE s.client_id = ? AND s.revoked_at = ?"
)
_MICROSECOND = 1e-6


def issued_sql(dialect: Dialect) -> str:
    """The check and the record of ``record_issued``, for one client and generation: an
    UPDATE, so it takes the row lock a change takes (and waits for it), and re-reads the
    row a change committed meanwhile."""
    return (
        f"UPDATE clients SET issued_until = {dialect.greatest}(issued_until, ?)"  # noqa: S608
        " WHERE id = ? AND generation = ? AND disabled = ? RETURNING 1"
    )


def issued_groups(issued: Sequence[IssuedToken]) -> list[tuple[str, int, float]]:
    """One (client, generation, latest iat) per pair, in client order: rows are locked in
    one order by every batch, so two replicas' batches cannot deadlock."""
    latest: dict[tuple[str, int], float] = {}
    for item in issued:
        key = (item.client_id, item.generation)
        latest[key] = max(latest.get(key, item.issued_at), item.issued_at)
    return [(client_id, gen, at) for (client_id, gen), at in sorted(latest.items())]


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
                f"SELECT {rows.CLIENT_READ} FROM clients WHERE id = ?",  # noqa: S608
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
                f" WHERE id = ? RETURNING {rows.CLIENT_READ}",
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

    async def change_client(
        self,
        client_id: str,
        *,
        at: datetime,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        delete: bool = False,
        revoke_for: timedelta | None = None,
        events: Sequence[Event] = (),
        revocation_events: Callable[[Revocation], Sequence[Event]] | None = None,
    ) -> ClientChange:
        """The client's row is updated first: on PostgreSQL its lock waits for every token
        write holding it (``record_issued``, ``create_session``), so what follows, new
        statements under READ COMMITTED, sees what they committed; a write arriving later
        waits for this transaction and then finds the new generation. On SQLite the write
        lock orders the whole transaction with every token write."""
        c = self._codec
        async with self._db.write(EVENT_TAKEN) as conn:
            row = await conn.fetchrow(
                _CHANGE,
                None if secret_hash is None else bytes(secret_hash),
                None if disabled is None else c.flag(disabled),
                None if allowed_claims is None else c.strings(sorted(allowed_claims)),
                None if sensitive_claims is None else c.strings(sorted(sensitive_claims)),
                client_id,
            )
            client = None if row is None else rows.client_from_row(c, row[:-1])
            revocation = None
            if revoke_for is not None:
                issued_until = None if row is None or not row[-1] else c.read_epoch(row[-1])
                revocation = await self._revoke_client(
                    conn, client_id, at, issued_until, revoke_for
                )
                if client is not None:
                    changed = datetime.fromtimestamp(revocation.issued_before, UTC)
                    client = replace(client, changed_at=changed)
                    await conn.execute(
                        "UPDATE clients SET changed_at = ? WHERE id = ?",
                        c.epoch(revocation.issued_before),
                        client_id,
                    )
            if delete and client is not None:
                await conn.execute("DELETE FROM clients WHERE id = ?", client_id)
            if client is not None or revocation is not None:
                written = list(events)
                if revocation is not None and revocation_events is not None:
                    written.extend(revocation_events(revocation))
                await self._insert_events(conn, written)
        return ClientChange(client, revocation)

    async def _revoke_client(
        self,
        conn: Connection,
        client_id: str,
        at: datetime,
        issued_until: float | None,
        revoke_for: timedelta,
    ) -> Revocation:
        """End the client's open sessions and record its not-before: ``at``, or just after
        the latest token committed for it if a replica whose clock runs ahead minted that
        (the highest client-credentials ``iat``, the sessions just ended)."""
        c = self._codec
        recorded_at = c.instant(at)
        await conn.execute(
            "UPDATE sessions SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
            recorded_at,
            client_id,
        )
        latest = await conn.fetchrow(_ENDED_LATEST, client_id, recorded_at)
        times = [at.timestamp()]
        if issued_until is not None:
            times.append(issued_until + _MICROSECOND)
        for value in latest or ():
            if value is not None:
                times.append(c.read_instant(value).timestamp() + _MICROSECOND)
        issued_before = round(max(times), 6)
        revocation = Revocation(
            RevocationKind.CLIENT,
            client_id,
            issued_before,
            issued_before + revoke_for.total_seconds(),
        )
        await self._upsert_revocation(conn, revocation, recorded_at)
        return revocation

    async def record_issued(self, issued: Sequence[IssuedToken]) -> list[bool]:
        c = self._codec
        sql = issued_sql(self._db.dialect)
        current: set[tuple[str, int]] = set()
        async with self._db.write(EVENT_TAKEN) as conn:
            for client_id, generation, latest in issued_groups(issued):
                row = await conn.fetchrow(
                    sql, c.epoch(latest), client_id, generation, c.flag(False)
                )
                if row is not None:
                    current.add((client_id, generation))
            committed = [(i.client_id, i.generation) in current for i in issued]
            await self._insert_events(
                conn, [i.event for i, ok in zip(issued, committed, strict=True) if ok]
            )
        return committed
