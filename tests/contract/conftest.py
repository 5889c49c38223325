"""Fixtures that run the one Store contract suite against every backend.

To add a backend, write a factory like ``sqlite_backend`` (an async context
manager that sets up an empty database for one test and tears it down) and
add one line to ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest

from authority.store import sqlite
from authority.store.base import Store


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


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "sqlite": sqlite_backend,
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
