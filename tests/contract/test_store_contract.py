"""The Store contract: what every backend must do, as a caller would notice it."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from authority.domain.errors import AlreadyExists, NotFound, Unavailable
from authority.domain.keys import Algorithm, KeyRecord, KeyUpdate, apply_update
from authority.domain.principals import Principal
from authority.store.base import Store
from authority.store.migrations import Migration, load_migrations, plan_migrations
from authority.store.sqlite import SqliteStore

from .conftest import Backend

OpenStore = Callable[[], Awaitable[Store]]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def make_key(kid: str, **changes: Any) -> KeyRecord:
    key = KeyRecord(
        kid=kid,
        algorithm=Algorithm.EDDSA,
        public_jwk={"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg", "kid": kid},
        wrapped_private_key=b"\x00wrapped\xff" + kid.encode(),
        kek_id="kek-1",
        published_at=T0,
        activates_at=T0 + timedelta(hours=1),
    )
    return replace(key, **changes)


def make_principal(name: str = "alice", principal_id: str = "p-1") -> Principal:
    return Principal(id=principal_id, name=name, password_hash=HASH, disabled=False, created_at=T0)


async def insert_keys(store: Store, *keys: KeyRecord) -> None:
    async with store.key_ring_transaction() as tx:
        for key in keys:
            await tx.insert_key(key)


async def stored_key(store: Store, kid: str) -> KeyRecord:
    return next(k for k in await store.list_keys() if k.kid == kid)


def is_utc_aware(instant: datetime | None) -> bool:
    return instant is None or instant.utcoffset() == timedelta(0)


# -- principals ---------------------------------------------------------------


async def test_principals_round_trip_exactly(store: Store) -> None:
    principal = Principal(
        id="p-ü-1", name="Zoë Ångström", password_hash=HASH, disabled=True, created_at=T0
    )
    await store.create_principal(principal)

    assert await store.get_principal("p-ü-1") == principal
    by_name = await store.get_principal_by_name("Zoë Ångström")
    assert by_name == principal
    assert by_name is not None
    assert is_utc_aware(by_name.created_at)


async def test_a_taken_name_is_refused_without_revealing_the_hash(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    with pytest.raises(AlreadyExists) as caught:
        await store.create_principal(make_principal("alice", "p-2"))

    assert "alice" in caught.value.message
    assert HASH not in caught.value.message
    assert await store.get_principal("p-2") is None


async def test_a_taken_id_is_refused(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    with pytest.raises(AlreadyExists):
        await store.create_principal(make_principal("bob", "p-1"))

    assert await store.get_principal_by_name("bob") is None


async def test_unknown_principals_are_none(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    assert await store.get_principal("p-404") is None
    assert await store.get_principal_by_name("nobody") is None


# -- keys -----------------------------------------------------------------------


async def test_keys_round_trip_exactly(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    scheduled = make_key(
        "k-1",
        algorithm=Algorithm.ES256,
        published_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        activates_at=datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=plus_two),
        retires_at=T0 + timedelta(days=30, microseconds=7),
    )
    plain = make_key("k-2", algorithm=Algorithm.RS256)
    await insert_keys(store, scheduled, plain)

    async with store.key_ring_transaction() as tx:
        seen_in_transaction = sorted(await tx.list_keys(), key=lambda k: k.kid)
    stored = sorted(await store.list_keys(), key=lambda k: k.kid)

    assert stored == [scheduled, plain]
    assert seen_in_transaction == stored
    for key in stored:
        assert isinstance(key.algorithm, Algorithm)
        for instant in (key.published_at, key.activates_at, key.retires_at, key.compromised_at):
            assert is_utc_aware(instant)


async def test_a_taken_kid_is_refused_and_the_transaction_rolls_back(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))

    with pytest.raises(AlreadyExists) as caught:
        await insert_keys(store, make_key("k-2"), make_key("k-1"))

    assert "k-1" in caught.value.message
    assert [k.kid for k in await store.list_keys()] == ["k-1"]


UPDATES = {
    "retire": KeyUpdate("k-1", retires_at=T0 + timedelta(days=30)),
    "move activation": KeyUpdate("k-1", activates_at=T0 + timedelta(minutes=5)),
    "nothing": KeyUpdate("k-1"),
    "compromise": KeyUpdate("k-1", compromised_at=T0 + timedelta(hours=2)),
}


@pytest.mark.parametrize("update", UPDATES.values(), ids=list(UPDATES))
async def test_update_key_applies_the_domain_semantics(store: Store, update: KeyUpdate) -> None:
    original = make_key("k-1", retires_at=T0 + timedelta(days=60))
    await insert_keys(store, original, make_key("k-2"))

    async with store.key_ring_transaction() as tx:
        await tx.update_key(update)

    expected = apply_update(original, update)
    if update.compromised_at is not None:
        expected = replace(expected, wrapped_private_key=b"")
    assert await stored_key(store, "k-1") == expected
    assert await stored_key(store, "k-2") == make_key("k-2")


async def test_clear_retires_at_cancels_a_retirement(store: Store) -> None:
    await insert_keys(store, make_key("k-1", retires_at=T0 + timedelta(days=30)))

    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", clear_retires_at=True))

    assert (await stored_key(store, "k-1")).retires_at is None


async def test_compromise_erases_private_material_for_good(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))
    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", compromised_at=T0))

    # A later schedule change must not bring anything back.
    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", retires_at=T0 + timedelta(days=1)))

    key = await stored_key(store, "k-1")
    assert key.wrapped_private_key == b""
    assert key.compromised_at == T0
    assert key.public_jwk == make_key("k-1").public_jwk


async def test_updating_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        async with store.key_ring_transaction() as tx:
            await tx.update_key(KeyUpdate("k-404", retires_at=T0))


async def test_delete_keys_removes_only_those_named(store: Store) -> None:
    await insert_keys(store, make_key("k-1"), make_key("k-2"), make_key("k-3"))

    async with store.key_ring_transaction() as tx:
        await tx.delete_keys(("k-1", "k-3", "k-404"))
        await tx.delete_keys(())

    assert [k.kid for k in await store.list_keys()] == ["k-2"]


# -- key-ring transactions --------------------------------------------------------


async def test_generation_grows_by_one_per_committed_transaction(store: Store) -> None:
    start = await store.key_ring_generation()

    await insert_keys(store, make_key("k-1"))
    async with store.key_ring_transaction():
        pass  # even an empty transaction tells pollers to look again

    assert await store.key_ring_generation() == start + 2


async def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))
    before = await store.key_ring_generation()

    async def change_everything_then_fail() -> None:
        async with store.key_ring_transaction() as tx:
            await tx.insert_key(make_key("k-2"))
            await tx.update_key(KeyUpdate("k-1", compromised_at=T0))
            await tx.delete_keys(("k-1",))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await change_everything_then_fail()

    assert await store.key_ring_generation() == before
    assert await store.list_keys() == [make_key("k-1")]


async def add_key_named_after_count(store: Store) -> None:
    async with store.key_ring_transaction() as tx:
        count = len(await tx.list_keys())
        await asyncio.sleep(0.05)  # give a concurrent transaction every chance to interleave
        await tx.insert_key(make_key(f"key-{count}"))


async def test_concurrent_transactions_of_one_store_serialise(store: Store) -> None:
    await asyncio.gather(*(add_key_named_after_count(store) for _ in range(3)))

    assert {k.kid for k in await store.list_keys()} == {"key-0", "key-1", "key-2"}
    assert await store.key_ring_generation() == 3


async def test_concurrent_transactions_of_two_stores_serialise(
    store: Store, open_store: OpenStore
) -> None:
    replica = await open_store()

    await asyncio.gather(add_key_named_after_count(store), add_key_named_after_count(replica))

    assert {k.kid for k in await replica.list_keys()} == {"key-0", "key-1"}
    assert await store.key_ring_generation() == 2


# -- lifecycle ------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(store: Store, open_store: OpenStore) -> None:
    principal = make_principal()
    await store.create_principal(principal)
    await insert_keys(store, make_key("k-1"))
    generation = await store.key_ring_generation()
    version = await store.schema_version()
    await store.close()

    reopened = await open_store()

    assert await reopened.get_principal_by_name("alice") == principal
    assert await reopened.list_keys() == [make_key("k-1")]
    assert await reopened.key_ring_generation() == generation
    assert await reopened.schema_version() == version


async def test_schema_version_is_the_number_of_migrations(store: Store, backend: Backend) -> None:
    files = [f for f in backend.migrations.iterdir() if f.name.endswith(".sql")]

    assert await store.schema_version() == len(files) >= 1


# -- lockout ledger -------------------------------------------------------------------

NOW = 1_893_456_000.0  # epoch seconds, as the attempt gates pass them


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_lockouts_are_recorded_extended_never_shortened_and_pruned(
    store: Store, open_store: OpenStore
) -> None:
    key = "alice\x1f2001:db8::/64"
    assert await store.lockout_until(key, NOW) is None
    await store.record_lockout(key, NOW + 60.5)
    await store.record_lockout(key, NOW + 30.0)  # a shorter lock never shortens it
    replica = await open_store()  # every replica sees it
    assert await replica.lockout_until(key, NOW) == NOW + 60.5
    assert await replica.lockout_until("alice\x1f10.0.0.1", NOW) is None  # per source
    await store.record_lockout(key, NOW + 120.25)
    assert await store.lockout_until(key, NOW + 100) == NOW + 120.25
    assert await store.lockout_until(key, NOW + 120.25) is None  # ended
    await store.record_lockout("bob\x1f10.0.0.1", NOW + 500.0)
    await store.prune(_at(NOW + 200), sealed_before=_at(NOW))
    assert await store.lockout_until(key, NOW) is None  # pruned once ended
    assert await store.lockout_until("bob\x1f10.0.0.1", NOW + 200) == NOW + 500.0


CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "schema_version": lambda s: s.schema_version(),
    "list_keys": lambda s: s.list_keys(),
    "key_ring_generation": lambda s: s.key_ring_generation(),
    "key_ring_transaction": insert_keys,
    "create_principal": lambda s: s.create_principal(make_principal()),
    "get_principal_by_name": lambda s: s.get_principal_by_name("alice"),
    "get_principal": lambda s: s.get_principal("p-1"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=list(CALLS))
async def test_use_after_close_is_unavailable(
    store: Store, call: Callable[[Store], Awaitable[object]]
) -> None:
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(Unavailable, match="closed"):
        await call(store)


# -- SQLite specifics -------------------------------------------------------------------


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "authority.db"
    store = SqliteStore(path)
    assert not path.parent.exists()  # the constructor does no I/O

    await store.open()
    try:
        await insert_keys(store, make_key("k-1"))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for file in path.parent.iterdir():  # the database and its -wal and -shm files
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
    finally:
        await store.close()


async def test_sqlite_tightens_an_existing_database_file(tmp_path: Path) -> None:
    path = tmp_path / "authority.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    store = SqliteStore(path)

    await store.open()
    await store.close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_sqlite_refuses_a_database_from_a_newer_build(tmp_path: Path) -> None:
    path = tmp_path / "authority.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', '')")

    newer = SqliteStore(path)
    with pytest.raises(Unavailable, match="newer"):
        await newer.open()
    await newer.close()


# -- migration planning -----------------------------------------------------------------


def migrations(*versions: int) -> tuple[Migration, ...]:
    return tuple(Migration(v, f"step_{v}", f"-- {v}") for v in versions)


def test_plan_applies_the_missing_migrations_in_order() -> None:
    available = migrations(3, 1, 2)

    assert [m.version for m in plan_migrations([], available)] == [1, 2, 3]
    assert [m.version for m in plan_migrations({1}, available)] == [2, 3]
    assert plan_migrations([1, 2, 3], available) == ()


def test_plan_refuses_a_database_newer_than_the_code() -> None:
    with pytest.raises(Unavailable, match=r"version 4.*up to 3"):
        plan_migrations([1, 2, 3, 4], migrations(1, 2, 3))


def test_load_migrations_reads_versioned_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "0002_add_things.sql").write_text("CREATE TABLE things (x);")
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE t (x);")
    (tmp_path / "README.md").write_text("not a migration")

    loaded = load_migrations(tmp_path)

    assert [(m.version, m.name) for m in loaded] == [(1, "initial"), (2, "add_things")]
    assert loaded[1].sql == "CREATE TABLE things (x);"


@pytest.mark.parametrize(
    "names",
    [["0001_initial.sql", "0003_gap.sql"], ["1_initial.sql"], ["0001_a.sql", "0001_b.sql"]],
)
def test_load_migrations_rejects_a_broken_set(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")

    with pytest.raises(ValueError):
        load_migrations(tmp_path)
