"""Canonical principal names and client claim lists, on every backend (migration 0006)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiosqlite
import asyncpg
import pytest

from authority.domain.clients import Client, GrantType
from authority.domain.errors import AlreadyExists, Unavailable
from authority.domain.principals import Principal
from authority.store import postgres, sqlite
from authority.store.base import Store
from authority.store.migrations import load_migrations, migrate
from authority.store.principal_names import MigrationRefused

from .conftest import Backend, postgres_url

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def principal(name: str, principal_id: str, offset: int = 0) -> Principal:
    return Principal(
        id=principal_id,
        name=name,
        password_hash=HASH,
        disabled=False,
        created_at=T0 + timedelta(seconds=offset),
    )


async def test_every_spelling_of_a_name_finds_the_one_principal(store: Store) -> None:
    alice = principal("Alice", "p-1")
    await store.create_principal(alice)

    for spelling in ("Alice", "alice", "ALICE", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "a\u200blice"):
        assert await store.get_principal_by_name(spelling) == alice, spelling
    assert await store.get_principal_by_name("alicia") is None


@pytest.mark.parametrize("other", ["ALICE", "ａｌｉｃｅ", "aIice", "аlice", "alicé", "a1ice"])
async def test_names_equal_once_folded_or_alike_are_refused(store: Store, other: str) -> None:
    await store.create_principal(principal("alice", "p-1"))

    with pytest.raises(AlreadyExists):
        await store.create_principal(principal(other, "p-2"))

    assert await store.get_principal("p-2") is None


async def test_client_claim_lists_round_trip_and_change(store: Store) -> None:
    client = Client(
        id="gateway",
        secret_hash=b"\x01" * 32,
        grant_types=frozenset({GrantType.TOKEN_EXCHANGE}),
        audiences=("api",),
        scopes=frozenset(),
        default_scopes=(),
        access_token_ttl=timedelta(minutes=5),
        session_idle_ttl=timedelta(hours=1),
        session_absolute_ttl=timedelta(days=1),
        disabled=False,
        created_at=T0,
        allowed_claims=frozenset({"tier", "department"}),
        sensitive_claims=frozenset({"roles"}),
    )
    await store.create_client(client)
    assert await store.get_client("gateway") == client

    changed = await store.update_client(
        "gateway", allowed_claims=frozenset(), sensitive_claims=frozenset({"act", "roles"})
    )
    expected = replace(
        client, allowed_claims=frozenset(), sensitive_claims=frozenset({"act", "roles"})
    )
    assert changed == expected
    assert await store.update_client("gateway", disabled=True) == replace(expected, disabled=True)


@asynccontextmanager
async def _legacy(backend: Backend) -> AsyncIterator[object]:
    """A database at schema version 5 (before canonical names), for the backend."""
    if backend.name == "sqlite":
        assert backend.path is not None
        backend.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with aiosqlite.connect(backend.path, isolation_level=None) as db:
            await migrate(sqlite._SqliteMigrationTarget(db), load_migrations(sqlite.MIGRATIONS)[:5])
            yield db
        return
    store = backend.make()
    assert isinstance(store, postgres.PostgresStore)
    schema = store._schema
    conn = await asyncpg.connect(postgres_url(), server_settings={"search_path": f'"{schema}"'})
    try:
        target = postgres._PostgresMigrationTarget(conn, schema, 1234567)
        await migrate(target, load_migrations(postgres.MIGRATIONS)[:5])
        yield conn
    finally:
        await conn.close()


async def _insert_legacy(backend: Backend, rows: Sequence[tuple[str, str, int]]) -> None:
    async with _legacy(backend) as conn:
        for principal_id, name, offset in rows:
            created = T0 + timedelta(seconds=offset)
            if backend.name == "sqlite":
                assert isinstance(conn, aiosqlite.Connection)
                await conn.execute(
                    "INSERT INTO principals (id, name, password_hash, disabled, created_at)"
                    " VALUES (?, ?, ?, 0, ?)",
                    (principal_id, name, HASH, int(created.timestamp() * 1_000_000)),
                )
            else:
                await conn.execute(  # type: ignore[attr-defined]
                    "INSERT INTO principals (id, name, password_hash, disabled, created_at)"
                    " VALUES ($1, $2, $3, false, $4)",
                    principal_id,
                    name,
                    HASH,
                    created,
                )


async def test_migration_backfills_canonical_names_and_keeps_older_lookalikes_first(
    backend: Backend,
) -> None:
    await _insert_legacy(backend, [("p-1", "Alice", 0), ("p-2", "аlice", 1), ("p-3", "Bob", 2)])
    store = backend.make()
    await store.open()
    try:
        assert (await store.get_principal_by_name("ALICE") or principal("", "")).id == "p-1"
        assert (await store.get_principal_by_name("аlice") or principal("", "")).id == "p-2"
        assert (await store.get_principal_by_name("bob") or principal("", "")).id == "p-3"
        with pytest.raises(AlreadyExists):  # the older look-alike still blocks new ones
            await store.create_principal(principal("aIice", "p-4"))
        await store.create_principal(principal("carol", "p-5"))
    finally:
        await store.close()


async def test_migration_refuses_two_names_equal_once_folded(backend: Backend) -> None:
    await _insert_legacy(backend, [("p-1", "alice", 0), ("p-2", "ALICE", 1)])
    store = backend.make()
    with pytest.raises(MigrationRefused, match=r"p-1 \('alice'\) and p-2 \('ALICE'\)"):
        await store.open()
    await store.close()
    assert issubclass(MigrationRefused, Unavailable)
