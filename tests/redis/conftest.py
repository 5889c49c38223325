"""A real Redis for the adapter tests: no fakes, since the point is the Lua and the wire.

``AUTHORITY_TEST_REDIS_URL`` says where (default ``redis://127.0.0.1:6379/0``). If it is
not reachable the tests are skipped, or fail when ``AUTHORITY_TEST_REQUIRE_SERVICES=1``
(CI sets it, so a missing service cannot pass silently). Each test works under its own
random key prefix and deletes its keys afterwards, so tests may share a database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from redis.asyncio import Redis

from authority.redis.attempts import RedisAttemptGate
from authority.redis.fanout import RedisFanout

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("AUTHORITY_TEST_REDIS_URL", DEFAULT_URL)
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        message = (
            f"Redis not reachable at {redacted(url)}; set AUTHORITY_TEST_REDIS_URL "
            f"or start it (see README) [{type(exc).__name__}]"
        )
        if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client, to look at (and tamper with) what the adapters wrote."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(raw_redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    name = f"authority-test-{uuid.uuid4().hex}"
    yield name
    async for batch in _scan_batches(raw_redis, f"{name}:*"):
        await raw_redis.unlink(*batch)


async def _scan_batches(client: Redis, pattern: str) -> AsyncIterator[list[bytes]]:
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor=cursor, match=pattern, count=1000)
        if keys:
            yield keys
        if cursor == 0:
            return


@pytest.fixture
async def make_fanout(
    redis_url: str, prefix: str
) -> AsyncIterator[Callable[..., Awaitable[RedisFanout]]]:
    """Started fan-outs on this test's prefix (other replicas); all closed afterwards."""
    made: list[RedisFanout] = []

    async def make(**kwargs: Any) -> RedisFanout:
        fanout = RedisFanout(kwargs.pop("url", redis_url), prefix=prefix, **kwargs)
        await fanout.start()
        made.append(fanout)
        return fanout

    yield make
    for fanout in made:
        await fanout.close()


@pytest.fixture
async def make_gate(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., RedisAttemptGate]]:
    """Attempt gates on this test's prefix (other replicas); all closed afterwards."""
    made: list[RedisAttemptGate] = []

    def make(**kwargs: Any) -> RedisAttemptGate:
        gate = RedisAttemptGate(kwargs.pop("url", redis_url), prefix=prefix, **kwargs)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        await gate.close()
