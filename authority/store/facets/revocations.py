"""Durable revocations, the lockouts ledger, and pruning what both leave behind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from authority.domain.events import Event
from authority.domain.revocation import FINAL_KINDS, Revocation, RevocationKind
from authority.store import rows
from authority.store.facets.common import EVENT_TAKEN, Facet

_SESSION_COLUMN_BY_KIND = {
    RevocationKind.SESSION: "id",
    RevocationKind.SUBJECT: "subject",
    RevocationKind.CLIENT: "client_id",
}
_SELECT = f"SELECT {rows.REVOCATION_COLUMNS} FROM revocations"  # noqa: S608


class Revocations(Facet):
    async def record_revocation(
        self, revocation: Revocation, *, at: datetime, events: Sequence[Event] = ()
    ) -> int | None:
        column = _SESSION_COLUMN_BY_KIND.get(revocation.kind)
        recorded_at = self._codec.instant(at)
        async with self._db.write(EVENT_TAKEN) as conn:
            # The conditional insert decides: a repeat changes no row, and then nothing
            # else is written either (race-safe: a concurrent twin waits on the row's
            # unique index or the write lock, then sees it and inserts nothing).
            changed = await conn.fetchrow(
                self._record_sql(revocation.kind in FINAL_KINDS),
                *rows.revocation_params(self._codec, revocation, recorded_at),
            )
            if changed is None:
                return None  # nothing was changed; committing nothing is a rollback
            await self._insert_events(conn, events)
            if column is None:
                return 0
            return await conn.execute(
                f"UPDATE sessions SET revoked_at = ?"  # noqa: S608 - column from a fixed map
                f" WHERE {column} = ? AND revoked_at IS NULL",
                recorded_at,
                revocation.value,
            )

    def _record_sql(self, final: bool) -> str:
        """A jti or sid revocation is complete once recorded (see FINAL_KINDS): a repeat
        inserts nothing. Subject and client revocations are widened, and only when that
        changes them."""
        insert = (
            f"INSERT INTO revocations ({rows.REVOCATION_COLUMNS}, recorded_at)"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value)"
        )
        if final:
            return insert + " DO NOTHING RETURNING 1"
        greatest = self._db.dialect.greatest
        return (
            f"{insert} DO UPDATE SET"
            f" issued_before = {greatest}(revocations.issued_before, excluded.issued_before),"
            f" expires_at = {greatest}(revocations.expires_at, excluded.expires_at),"
            f" recorded_at = {greatest}(revocations.recorded_at, excluded.recorded_at)"
            " WHERE excluded.issued_before > revocations.issued_before"
            " OR excluded.expires_at > revocations.expires_at"
            " RETURNING 1"
        )

    async def list_revocations(self, now: float) -> list[Revocation]:
        async with self._db.read() as conn:
            found = await conn.fetch(_SELECT + " WHERE expires_at > ?", self._codec.epoch(now))
        return [rows.revocation_from_row(self._codec, row) for row in found]

    async def revocations_since(self, since: datetime, now: float) -> list[Revocation]:
        c = self._codec
        async with self._db.read() as conn:
            found = await conn.fetch(
                _SELECT + " WHERE recorded_at >= ? AND expires_at > ?",
                c.instant(since),
                c.epoch(now),
            )
        return [rows.revocation_from_row(c, row) for row in found]

    async def prune(self, now: datetime, *, sealed_before: datetime) -> int:
        c = self._codec
        at, sealed = c.instant(now), c.instant(sealed_before)
        async with self._db.write() as conn:
            revocations = await conn.execute("DELETE FROM revocations WHERE expires_at <= ?", at)
            sessions = await conn.execute("DELETE FROM sessions WHERE absolute_expires_at <= ?", at)
            await conn.execute(
                "UPDATE refresh_tokens SET sealed_successor = NULL"
                " WHERE consumed_at < ? AND sealed_successor IS NOT NULL",
                sealed,
            )
            await conn.execute("DELETE FROM attempt_lockouts WHERE locked_until <= ?", at)
        return revocations + sessions


class Lockouts(Facet):
    async def record_lockout(self, key: str, locked_until: float) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT INTO attempt_lockouts (key, locked_until) VALUES (?, ?)"  # noqa: S608
                " ON CONFLICT (key) DO UPDATE SET locked_until ="
                f" {self._db.dialect.greatest}(attempt_lockouts.locked_until,"
                " excluded.locked_until)",
                key,
                self._codec.epoch(locked_until),
            )

    async def lockout_until(self, key: str, now: float) -> float | None:
        async with self._db.read() as conn:
            row = await conn.fetchrow(
                "SELECT locked_until FROM attempt_lockouts WHERE key = ? AND locked_until > ?",
                key,
                self._codec.epoch(now),
            )
        return None if row is None else self._codec.read_epoch(row[0])
