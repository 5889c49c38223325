"""The store's lifecycle: open, close, migrations, files and connections, the factory."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from authority.domain.errors import InvalidArgument, Unavailable
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.base import Store
from authority.store.factory import make_store
from authority.store.migrations import Migration, load_migrations, plan_migrations
from authority.store.postgres import PostgresStore
from authority.store.sqlite import SqliteStore

from .builders import (
    T0,
    OpenStore,
    consume,
    digest,
    insert_keys,
    make_client,
    make_key,
    make_principal,
    start_session,
)
from .conftest import Backend, fresh_schema


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


async def test_concurrent_opens_apply_each_migration_once(
    backend: Backend, open_store: OpenStore
) -> None:
    # On SQLite, switching a new file to WAL can answer SQLITE_BUSY at once (busy_timeout
    # does not cover it): the store retries, so racing opens (sibling workers) all succeed.
    stores = await asyncio.gather(*(open_store() for _ in range(4)))

    versions = {await store.schema_version() for store in stores}
    files = [f for f in backend.migrations.iterdir() if f.name.endswith(".sql")]
    assert versions == {len(files)}
    assert await stores[0].key_ring_generation() == 0  # the seed row was inserted once


LIFECYCLE_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "update_principal": lambda s: s.update_principal("p-1", disabled=True),
    "delete_principal": lambda s: s.delete_principal("p-1"),
    "create_client": lambda s: s.create_client(make_client()),
    "get_client": lambda s: s.get_client("mobile"),
    "update_client": lambda s: s.update_client("mobile", disabled=True),
    "delete_client": lambda s: s.delete_client("mobile"),
    "create_session": start_session,
    "find_refresh": lambda s: s.find_refresh(digest("rt")),
    "consume_refresh": lambda s: consume(s, "rt", "rt-1", T0),
    "record_revocation": lambda s: s.record_revocation(
        Revocation(RevocationKind.TOKEN, "j", 0, 1), at=T0
    ),
    "list_revocations": lambda s: s.list_revocations(0),
    "revocations_since": lambda s: s.revocations_since(T0, 0),
    "prune": lambda s: s.prune(T0, sealed_before=T0),
    "open": lambda s: s.open(),
}


@pytest.mark.parametrize("call", LIFECYCLE_CALLS.values(), ids=list(LIFECYCLE_CALLS))
async def test_lifecycle_use_after_close_is_unavailable(
    store: Store, call: Callable[[Store], Awaitable[object]]
) -> None:
    await store.close()

    with pytest.raises(Unavailable, match="closed"):
        await call(store)


async def test_postgres_unreachable_is_unavailable_without_the_password() -> None:
    store = PostgresStore(
        "postgresql://authority:pa55-w0rd%21@127.0.0.1:1/test?password=other-s3cret",
        connect_timeout=1,
        command_timeout=1,
    )
    started = time.monotonic()

    with pytest.raises(Unavailable, match="PostgreSQL is unavailable") as caught:
        await store.open()

    assert time.monotonic() - started < 3
    for secret in ("pa55-w0rd", "other-s3cret"):
        assert secret not in caught.value.message
        assert secret not in repr(caught.value)
    await store.close()
    await store.close()


class Proxy:
    """A TCP relay in front of the test database that can freeze (keep the connections,
    stop answering) or vanish (drop the connections and stop listening)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def vanish(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._flowing.set()


@asynccontextmanager
async def proxied_store() -> AsyncIterator[tuple[PostgresStore, Proxy]]:
    async with fresh_schema() as (url, schema):
        parts = urlsplit(url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        dsn = urlunsplit(parts._replace(netloc=netloc))
        store = PostgresStore(dsn, schema=schema, command_timeout=1, connect_timeout=1)
        try:
            await store.open()
            await store.create_principal(make_principal())
            yield store, proxy
        finally:
            started = time.monotonic()
            await store.close()
            assert time.monotonic() - started < 3, "close() must not hang on a dead server"
            proxy.vanish()


@pytest.mark.parametrize("failure", ["vanish", "freeze"])
async def test_postgres_that_went_away_is_unavailable_within_seconds(failure: str) -> None:
    async with proxied_store() as (store, proxy):
        getattr(proxy, failure)()
        started = time.monotonic()

        for call in (
            lambda: store.get_principal("p-1"),
            lambda: consume(store, "rt", "rt-1", T0),
        ):
            with pytest.raises(Unavailable, match="PostgreSQL is unavailable"):
                async with asyncio.timeout(10):
                    await call()

        assert time.monotonic() - started < 8


async def test_postgres_refuses_a_schema_from_a_newer_build() -> None:
    async with fresh_schema() as (url, schema):
        store = PostgresStore(url, schema=schema)
        await store.open()
        await store.close()
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future')")
        finally:
            await conn.close()

        newer = PostgresStore(url, schema=schema)
        with pytest.raises(Unavailable, match="newer"):
            await newer.open()
        await newer.close()


async def test_postgres_schemas_are_independent_stores() -> None:
    async with fresh_schema() as (url, one), fresh_schema() as (_, two):
        first, second = PostgresStore(url, schema=one), PostgresStore(url, schema=two)
        await first.open()
        await second.open()
        try:
            await first.create_principal(make_principal())
            async with first.key_ring_transaction():
                pass

            assert await second.get_principal("p-1") is None
            assert await second.key_ring_generation() == 0
            await second.create_principal(make_principal())  # no clash across schemas
        finally:
            await first.close()
            await second.close()


def test_make_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    path = tmp_path / "authority.db"

    assert isinstance(make_store(None, path), SqliteStore)
    assert isinstance(make_store("", path), SqliteStore)
    assert isinstance(make_store("postgresql://u:pw@db/authority", path), PostgresStore)
    assert isinstance(make_store("postgres://db/authority", path), PostgresStore)
    assert not path.exists()  # no I/O


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://root:hunter2-secret@db/authority", "'mysql'"),
        ("postgresql+asyncpg://root:hunter2-secret@db/authority", "'postgresql+asyncpg'"),
        ("root:hunter2-secret@db/authority", None),
        ("hunter2-secret", None),
    ],
)
def test_make_store_refuses_other_urls_without_echoing_them(
    tmp_path: Path, url: str, named: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_store(url, tmp_path / "authority.db")

    assert "hunter2" not in caught.value.message
    if named is not None:
        assert named in caught.value.message
