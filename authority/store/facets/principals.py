"""Principals, and the credential changes ordered with logins by their generation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from authority.domain.events import Event
from authority.domain.principals import Principal, canonical_name
from authority.domain.revocation import Revocation, session_revocation
from authority.store import rows
from authority.store.base import CredentialChange
from authority.store.database import Connection
from authority.store.facets.common import EVENT_TAKEN, Facet
from authority.store.principal_names import taken_messages

_INSERT = rows.insert("principals", rows.PRINCIPAL_COLUMNS)
_SET_FIELDS = (
    "UPDATE principals SET password_hash = COALESCE(?, password_hash),"
    " disabled = COALESCE(?, disabled),"
)


class Principals(Facet):
    async def create_principal(self, principal: Principal, *, events: Sequence[Event] = ()) -> None:
        taken = {
            **taken_messages(principal.name),
            "principals.id": f"a principal with id {principal.id!r} already exists",
            **EVENT_TAKEN,
        }
        params = rows.principal_params(self._codec, principal)
        async with self._db.write(taken) as conn:
            await conn.execute(_INSERT, *params)
            await self._insert_events(conn, events)

    async def get_principal_by_name(self, name: str) -> Principal | None:
        return await self._get_principal("canonical_name", canonical_name(name))

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self._get_principal("id", principal_id)

    async def _get_principal(
        self, column: Literal["id", "canonical_name"], value: str
    ) -> Principal | None:
        """``column`` is one of two literals, never caller input."""
        async with self._db.read() as conn:
            row = await conn.fetchrow(
                f"SELECT {rows.PRINCIPAL_READ} FROM principals WHERE {column} = ?",  # noqa: S608
                value,
            )
        return None if row is None else rows.principal_from_row(self._codec, row)

    async def update_principal(
        self,
        principal_id: str,
        *,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: Sequence[Event] = (),
    ) -> Principal | None:
        async with self._db.write(EVENT_TAKEN) as conn:
            row = await conn.fetchrow(
                f"{_SET_FIELDS} credential_generation = credential_generation + ?"
                f" WHERE id = ? RETURNING {rows.PRINCIPAL_READ}",
                password_hash,
                None if disabled is None else self._codec.flag(disabled),
                int(password_hash is not None or disabled is not None),
                principal_id,
            )
            if row is not None:
                await self._insert_events(conn, events)
        return None if row is None else rows.principal_from_row(self._codec, row)

    async def delete_principal(self, principal_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._db.write(EVENT_TAKEN) as conn:
            deleted = await conn.execute("DELETE FROM principals WHERE id = ?", principal_id)
            if deleted:
                await self._insert_events(conn, events)
        return deleted > 0


class Credentials(Facet):
    async def rehash_password(
        self, principal_id: str, *, generation: int, password_hash: str
    ) -> bool:
        async with self._db.write() as conn:
            replaced = await conn.execute(
                "UPDATE principals SET password_hash = ?"
                " WHERE id = ? AND credential_generation = ?",
                password_hash,
                principal_id,
                generation,
            )
        return replaced > 0

    async def change_credentials(
        self,
        principal_id: str,
        *,
        at: datetime,
        password_hash: str | None = None,
        disabled: bool | None = None,
        delete: bool = False,
        revocation: Revocation | None = None,
        events: Sequence[Event] = (),
    ) -> CredentialChange:
        """The principal's row is updated first. On PostgreSQL its lock waits for every
        login holding ``FOR SHARE`` on it (``create_session``), so the sessions update
        below, a new statement under READ COMMITTED, sees every session those logins
        committed; a login arriving later waits for this transaction and then finds the new
        generation. On SQLite the write lock orders the whole transaction with every
        session insert of every process sharing the file."""
        changed_at = self._codec.instant(at)
        async with self._db.write(EVENT_TAKEN) as conn:
            row = await conn.fetchrow(
                f"{_SET_FIELDS} credential_generation = credential_generation + 1,"
                f" credentials_changed_at = {self._db.dialect.greatest}(credentials_changed_at, ?)"
                f" WHERE id = ? RETURNING {rows.PRINCIPAL_READ}",
                password_hash,
                None if disabled is None else self._codec.flag(disabled),
                changed_at,
                principal_id,
            )
            principal = None if row is None else rows.principal_from_row(self._codec, row)
            if delete and principal is not None:
                await conn.execute("DELETE FROM principals WHERE id = ?", principal_id)
            recorded: list[Revocation] = []
            if revocation is not None:
                recorded = await self._end_sessions(conn, principal_id, revocation, changed_at)
            if principal is not None or revocation is not None:
                await self._insert_events(conn, events)
        return CredentialChange(principal, tuple(recorded))

    async def _end_sessions(
        self, conn: Connection, subject: str, revocation: Revocation, changed_at: object
    ) -> list[Revocation]:
        """Record the subject's revocation, revoke its open sessions and record each."""
        await self._upsert_revocation(conn, revocation, changed_at)
        recorded = [revocation]
        ended = await conn.fetch(
            "UPDATE sessions SET revoked_at = ? WHERE subject = ? AND revoked_at IS NULL"
            " RETURNING id",
            changed_at,
            subject,
        )
        for (session_id,) in ended:
            session = session_revocation(session_id, revocation.expires_at)
            await self._upsert_revocation(conn, session, changed_at)
            recorded.append(session)
        return recorded
