"""Refresh on PostgreSQL in two statements on one pooled connection: the read, then one
statement that consumes the token, inserts its successor and the events, atomically.

A statement is its own transaction, so no BEGIN and COMMIT round trips are needed: the
data-modifying CTEs commit together or not at all. The conditional UPDATE decides a race
exactly as ``Sessions.consume_refresh`` does (the loser's row lock waits, then it sees
the winner's ``consumed_at``; ``FOR SHARE`` orders it with a revocation of the session);
the inserts select from its result, so a lost race inserts nothing.
"""

from __future__ import annotations

import functools

from authority.store import rows
from authority.store.base import RefreshStep, T
from authority.store.database import Dialect
from authority.store.facets.common import EVENT_TAKEN
from authority.store.facets.sessions import (
    REFRESH_STATE,
    Sessions,
    consume_params,
    consume_sql,
    refresh_state_from_row,
)


@functools.lru_cache(maxsize=8)
def rotation_sql(dialect: Dialect, events: int) -> str:
    """Consume, successor and ``events`` outbox rows in one statement; its one row is how
    many tokens it consumed (0 or 1). Each event's insert selects from the previous one, so
    the outbox sequence follows the events' order."""
    parts = [f"consumed AS ({consume_sql(dialect)} RETURNING 1)"]
    parts.append(
        f"successor AS (INSERT INTO refresh_tokens ({rows.REFRESH_COLUMNS})"  # noqa: S608
        f" SELECT {rows.marks(rows.REFRESH_COLUMNS)} FROM consumed)"
    )
    previous = "consumed"
    for index in range(events):
        parts.append(
            f"event_{index} AS (INSERT INTO outbox ({rows.EVENT_COLUMNS})"  # noqa: S608
            f" SELECT {rows.marks(rows.EVENT_COLUMNS)} FROM {previous} RETURNING 1)"
        )
        previous = f"event_{index}"
    return f"WITH {', '.join(parts)} SELECT count(*) FROM consumed"  # noqa: S608


class PostgresSessions(Sessions):
    async def consume_refresh_with(self, token_hash: bytes, step: RefreshStep[T]) -> T | None:
        """One pooled connection, two statements; ``step`` runs between them."""
        c = self._codec
        async with self._db.read() as conn:
            row = await conn.fetchrow(REFRESH_STATE, token_hash)
            result, rotation = step(None if row is None else refresh_state_from_row(c, row))
            if rotation is None:
                return result
            params = [
                *consume_params(c, token_hash, rotation),
                *rows.refresh_params(c, rotation.successor),
            ]
            for event in rotation.events:
                params.extend(rows.event_params(c, event))
            with self._db.translated(EVENT_TAKEN):
                won = await conn.fetchrow(
                    rotation_sql(self._db.dialect, len(rotation.events)), *params
                )
        return result if won is not None and won[0] == 1 else None
