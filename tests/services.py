"""Where the real PostgreSQL and Redis are, for tests that need them.

``AUTHORITY_TEST_DATABASE_URL`` / ``AUTHORITY_TEST_REDIS_URL`` say where (defaults:
the local services). Unreachable means skipped, with the reason and how to enable
them, unless ``AUTHORITY_TEST_REQUIRE_SERVICES=1`` (CI), where it means failed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***", 1)))


def _unreachable(what: str, variable: str, url: str, why: str) -> None:
    message = (
        f"{what} not reachable at {redacted(url)} ({why}); set {variable} or start it"
        " (see README, 'Tests')"
    )
    if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@cache
def _redis_problem(url: str) -> str | None:
    import redis  # noqa: PLC0415 - only where Redis is wanted

    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        return type(exc).__name__
    return None


@cache
def _postgres_problem(url: str) -> str | None:
    import asyncio  # noqa: PLC0415

    import asyncpg  # noqa: PLC0415

    async def probe() -> None:
        connection = await asyncpg.connect(url, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return type(exc).__name__
    return None


def redis_url() -> str:
    url = os.environ.get("AUTHORITY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    problem = _redis_problem(url)
    if problem:
        _unreachable("Redis", "AUTHORITY_TEST_REDIS_URL", url, problem)
    return url


def database_url() -> str:
    url = os.environ.get("AUTHORITY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    problem = _postgres_problem(url)
    if problem:
        _unreachable("PostgreSQL", "AUTHORITY_TEST_DATABASE_URL", url, problem)
    return url


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards), as a URL."""
    import asyncio  # noqa: PLC0415

    import asyncpg  # noqa: PLC0415

    base = database_url()
    name = f"t_{uuid.uuid4().hex}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(base, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(base)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
