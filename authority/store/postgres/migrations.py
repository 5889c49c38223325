"""Migrating a PostgreSQL schema, once, whichever process gets there first."""

from __future__ import annotations

from asyncpg import Connection
from asyncpg.pool import PoolConnectionProxy

from authority.store.migrations import Migration
from authority.store.postgres.dsn import quote_identifier
from authority.store.principal_names import PRINCIPAL_NAMES_VERSION, backfill_principal_names


class _PostgresMigrationTarget:
    """Runs each migration in its own transaction under an advisory lock, so processes
    opening the store at the same time apply each migration exactly once."""

    def __init__(self, conn: Connection | PoolConnectionProxy, schema: str, lock_key: int) -> None:
        self._conn = conn
        self._schema = schema
        self._lock_key = lock_key

    async def prepare(self) -> None:
        """Create the schema (only if missing: ``CREATE SCHEMA IF NOT EXISTS`` would need
        the CREATE privilege even when it exists) and the ledger."""
        schema = quote_identifier(self._schema)
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            exists = await self._conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", self._schema
            )
            if not exists:
                await self._conn.execute(f"CREATE SCHEMA {schema}")
            await self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations"
                " (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )

    async def applied_versions(self) -> set[int]:
        rows = await self._conn.fetch("SELECT version FROM schema_migrations")
        return {int(row[0]) for row in rows}

    async def _backfill_principal_names(self) -> None:
        rows = await self._conn.fetch("SELECT id, name FROM principals ORDER BY created_at, id")
        keys = backfill_principal_names([(row[0], row[1]) for row in rows])
        await self._conn.executemany(
            "UPDATE principals SET canonical_name = $2, name_skeleton = $3 WHERE id = $1",
            [(k.principal_id, k.canonical_name, k.name_skeleton) for k in keys],
        )
        await self._conn.execute("ALTER TABLE principals ALTER COLUMN canonical_name SET NOT NULL")

    async def apply(self, migration: Migration) -> None:
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            if migration.version in await self.applied_versions():
                return  # another process applied it while we waited for the lock
            await self._conn.execute(migration.sql)  # no arguments: several statements may run
            if migration.version == PRINCIPAL_NAMES_VERSION:
                await self._backfill_principal_names()
            await self._conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
