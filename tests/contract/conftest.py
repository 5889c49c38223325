"""Fixtures that run the one Store contract suite against every backend.

To add a backend, write a factory like ``sqlite_backend`` (an async context
manager that sets up an empty database for one test and tears it down) and
add one line to ``BACKENDS``.

PostgreSQL: each test gets a fresh schema in the database named by
``AUTHORITY_TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped afterwards. If the server is not reachable the PostgreSQL tests are skipped,
or fail when ``AUTHORITY_TEST_REQUIRE_SERVICES=1`` (as in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg
import pytest

from authority.store import postgres, sqlite
from authority.store.base import Store
from authority.store.facets.store import SqlStore

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Backend:
    """One empty database for one test, and how to reach it."""

    name: str
    make: Callable[[], Store]  # a new, unopened store on this test's database
    migrations: Traversable  # the backend's directory of NNNN_description.sql files
    path: Path | None = None  # the database file, for backends that have one


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "state" / "authority.db"
    yield Backend("sqlite", lambda: sqlite.SqliteStore(path), sqlite.MIGRATIONS, path)


class SharedSqliteStore(SqlStore):
    """SQLite without its one-trip writes (``authority.store.sqlite_onetrip``): the shared
    facets, as the other backends run them. The contract holds with the fast path on and
    off."""

    def __init__(self, path: Path) -> None:
        super().__init__(sqlite.SqliteDatabase(path))


@asynccontextmanager
async def sqlite_shared_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    path = tmp_path / "state" / "authority.db"
    yield Backend("sqlite", lambda: SharedSqliteStore(path), sqlite.MIGRATIONS, path)


def postgres_url() -> str:
    return os.environ.get("AUTHORITY_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL


_reachability: dict[str, str | None] = {}  # url -> None if reachable, else why not


async def require_postgres() -> str:
    """The test database's URL; skips (or fails, when services are required) the calling
    test if PostgreSQL cannot be reached. Checked once per session."""
    url = postgres_url()
    if url not in _reachability:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _reachability[url] = type(exc).__name__
        else:
            await conn.close()
            _reachability[url] = None
    problem = _reachability[url]
    if problem is not None:
        reason = (
            f"PostgreSQL not reachable at {postgres.redact_dsn(url)}; "
            "set AUTHORITY_TEST_DATABASE_URL or start it (see README)"
        )
        if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(
                f"{reason} (connecting failed with {problem}; "
                "AUTHORITY_TEST_REQUIRE_SERVICES=1 makes this a failure, not a skip)",
                pytrace=False,
            )
        pytest.skip(reason)
    return url


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[tuple[str, str]]:
    """(url, schema): a schema name no one uses yet, dropped with everything in it after."""
    url = await require_postgres()
    schema = f"t_{uuid.uuid4().hex}"
    try:
        yield url, schema
    finally:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@asynccontextmanager
async def postgres_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    async with fresh_schema() as (url, schema):
        yield Backend(
            "postgres", lambda: postgres.PostgresStore(url, schema=schema), postgres.MIGRATIONS
        )


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "sqlite": sqlite_backend,
    "sqlite-shared": sqlite_shared_backend,
    "postgres": postgres_backend,
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param](tmp_path) as created:
        yield created


@pytest.fixture
async def open_store(backend: Backend) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Opens more stores on the same database (other replicas, or a restart); all closed after."""
    opened: list[Store] = []

    async def open_another() -> Store:
        store = backend.make()
        await store.open()
        opened.append(store)
        return store

    yield open_another
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[Store]]) -> Store:
    """An open store on an empty database, for each backend in ``BACKENDS``."""
    return await open_store()
