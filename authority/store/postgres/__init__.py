"""The production store: PostgreSQL, shared by every replica, reached through an asyncpg pool.

Races are decided by PostgreSQL itself: a refresh token is consumed by one conditional
``UPDATE`` (row locks make the loser see the winner's change), and key-ring transactions
(and migrations) take a transaction-scoped advisory lock, so they serialise across every
process sharing the database.

Every connection's ``search_path`` names only the store's schema, so one database can
hold several independent stores (the contract tests use a fresh schema per test).
Advisory-lock keys are derived from the schema name for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authority.store.facets.store import SqlStore
from authority.store.postgres.audit import PostgresAudit
from authority.store.postgres.database import MIGRATIONS, PostgresDatabase
from authority.store.postgres.dsn import redact_dsn
from authority.store.postgres.migrations import _PostgresMigrationTarget
from authority.store.postgres.outbox import PostgresOutbox
from authority.store.postgres.sessions import PostgresSessions

if TYPE_CHECKING:
    from authority.store.base import Store

__all__ = ["MIGRATIONS", "PostgresStore", "_PostgresMigrationTarget", "redact_dsn"]


class PostgresStore(PostgresSessions, PostgresOutbox, PostgresAudit, SqlStore):
    """The ``Store`` on PostgreSQL."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """No I/O here: ``open`` connects. ``dsn`` may hold a password; it never appears
        in an error message."""
        super().__init__(
            PostgresDatabase(
                dsn,
                schema=schema,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                connect_timeout=connect_timeout,
            )
        )
        self._schema = schema


if TYPE_CHECKING:
    _checked: Store = PostgresStore("")  # mypy proves PostgresStore satisfies the protocol
