"""Sessions and their refresh tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from authority.domain.events import Event
from authority.domain.sessions import RefreshRecord, Session
from authority.store import rows
from authority.store.base import RefreshState, RefreshStep, Rotation, T
from authority.store.codec import Codec
from authority.store.database import Dialect, Row
from authority.store.facets.common import EVENT_TAKEN, Facet

_INSERT_SESSION = rows.insert("sessions", rows.SESSION_COLUMNS)
_INSERT_REFRESH = rows.insert("refresh_tokens", rows.REFRESH_COLUMNS)
_FIND_REFRESH = (
    f"SELECT {rows.prefixed('r', rows.REFRESH_COLUMNS)},"  # noqa: S608
    f" {rows.prefixed('s', rows.SESSION_COLUMNS)}, {rows.prefixed('n', rows.REFRESH_COLUMNS)}"
    " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
    " LEFT JOIN refresh_tokens n ON n.token_hash = r.successor_hash"
    " WHERE r.token_hash = ?"
)
REFRESH_STATE = (
    f"SELECT {rows.prefixed('r', rows.REFRESH_COLUMNS)},"  # noqa: S608
    f" {rows.prefixed('s', rows.SESSION_COLUMNS)}, {rows.prefixed('n', rows.REFRESH_COLUMNS)},"
    f" {rows.prefixed('p', rows.PRINCIPAL_READ)}, {rows.prefixed('c', rows.CLIENT_READ)}"
    " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
    " LEFT JOIN refresh_tokens n ON n.token_hash = r.successor_hash"
    " LEFT JOIN principals p ON p.id = s.subject"
    " LEFT JOIN clients c ON c.id = s.client_id"
    " WHERE r.token_hash = ?"
)
"""``find_refresh``'s row, with the session's principal and client, in one snapshot."""
INSERT_REFRESH = _INSERT_REFRESH


def consume_sql(dialect: Dialect) -> str:
    """The conditional UPDATE that decides a race (see ``Sessions.consume_refresh``)."""
    return (
        "UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?,"  # noqa: S608
        " sealed_successor = ?"
        " WHERE token_hash = ? AND consumed_at IS NULL AND EXISTS"
        " (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id"
        f" AND s.revoked_at IS NULL{dialect.share_lock})"
    )


def consume_params(c: Codec, token_hash: bytes, rotation: Rotation) -> tuple[object, ...]:
    return (
        c.instant(rotation.consumed_at),
        rotation.successor.token_hash,
        rotation.sealed,
        token_hash,
    )


def refresh_state_from_row(c: Codec, row: Row) -> RefreshState:
    """A row of ``REFRESH_STATE``: 7 + 9 + 7 + 7 + 15 columns."""
    principal = None if row[23] is None else rows.principal_from_row(c, row[23:30])
    return RefreshState(
        record=rows.refresh_from_row(c, row[:7]),
        session=rows.session_from_row(c, row[7:16]),
        successor=None if row[16] is None else rows.refresh_from_row(c, row[16:23]),
        principal=principal,
        client=None if row[30] is None else rows.client_from_row(c, row[30:]),
    )


class Sessions(Facet):
    async def create_session(
        self,
        session: Session,
        first: RefreshRecord | None,
        *,
        events: Sequence[Event] = (),
        generation: int | None = None,
        client_generation: int | None = None,
    ) -> bool:
        """The generation checks and the insert share one transaction. On PostgreSQL,
        ``FOR SHARE`` on the principal's row and on the client's: a credential change or a
        client change (each updates its row first) either waits for this insert to commit,
        and then revokes the session, or commits first, and then the re-checked row no
        longer matches; logins share the locks. On SQLite the write lock orders them."""
        taken = {"sessions.id": f"a session with id {session.id!r} already exists", **EVENT_TAKEN}
        c = self._codec
        session_params = rows.session_params(c, session)
        refresh_params = None if first is None else rows.refresh_params(c, first)
        async with self._db.write(taken) as conn:
            if generation is not None:
                current = await conn.fetchrow(
                    "SELECT 1 FROM principals WHERE id = ?"  # noqa: S608 - a fixed lock clause
                    " AND credential_generation = ? AND disabled = ?"
                    f"{self._db.dialect.share_lock}",
                    session.subject,
                    generation,
                    c.flag(False),
                )
                if current is None:
                    return False  # nothing written; committing nothing is a rollback
            if client_generation is not None:
                current = await conn.fetchrow(
                    "SELECT 1 FROM clients WHERE id = ?"  # noqa: S608 - a fixed lock clause
                    " AND generation = ? AND disabled = ?"
                    f"{self._db.dialect.share_lock}",
                    session.client_id,
                    client_generation,
                    c.flag(False),
                )
                if current is None:
                    return False
            await conn.execute(_INSERT_SESSION, *session_params)
            if refresh_params is not None:
                await conn.execute(_INSERT_REFRESH, *refresh_params)
            await self._insert_events(conn, events)
        return True

    async def find_refresh(
        self, token_hash: bytes
    ) -> tuple[RefreshRecord, Session, RefreshRecord | None] | None:
        """One statement, so the three records come from one snapshot."""
        async with self._db.read() as conn:
            row = await conn.fetchrow(_FIND_REFRESH, token_hash)
        if row is None:
            return None
        c = self._codec
        record = rows.refresh_from_row(c, row[:7])
        session = rows.session_from_row(c, row[7:16])
        successor = None if row[16] is None else rows.refresh_from_row(c, row[16:])
        return record, session, successor

    async def consume_refresh(
        self,
        token_hash: bytes,
        *,
        consumed_at: datetime,
        successor: RefreshRecord,
        sealed: bytes,
        events: Sequence[Event] = (),
    ) -> bool:
        """One conditional UPDATE decides the race: a concurrent consumer waits (row lock or
        write lock), then sees the winner's ``consumed_at`` and updates nothing. On
        PostgreSQL ``FOR SHARE`` makes a concurrent revocation of the session either wait
        for this consumption or be seen by it."""
        rotation = Rotation(consumed_at, successor, sealed, events)
        successor_params = rows.refresh_params(self._codec, successor)
        async with self._db.write(EVENT_TAKEN) as conn:
            won = await conn.execute(
                consume_sql(self._db.dialect), *consume_params(self._codec, token_hash, rotation)
            )
            if won != 1:
                return False  # nothing was changed; committing nothing is a rollback
            await conn.execute(_INSERT_REFRESH, *successor_params)
            await self._insert_events(conn, events)
        return True

    async def consume_refresh_with(self, token_hash: bytes, step: RefreshStep[T]) -> T | None:
        """The reference: one read, ``step`` on the event loop, then ``consume_refresh``.
        Each backend has a faster one with the same answers (one trip to SQLite's thread;
        two statements on PostgreSQL)."""
        async with self._db.read() as conn:
            row = await conn.fetchrow(REFRESH_STATE, token_hash)
        result, rotation = step(None if row is None else refresh_state_from_row(self._codec, row))
        if rotation is None:
            return result
        won = await self.consume_refresh(
            token_hash,
            consumed_at=rotation.consumed_at,
            successor=rotation.successor,
            sealed=rotation.sealed,
            events=rotation.events,
        )
        return result if won else None
