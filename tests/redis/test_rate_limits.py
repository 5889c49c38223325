"""RedisRateLimit: the login gate's bucket in a key space of its own, shared by replicas,
with the in-process limit taking over while Redis is down."""

from __future__ import annotations

import pytest

from authority.domain.errors import Unavailable
from authority.domain.throttle import RateLimiter, Throttled
from authority.ports.rate_limits import FallbackRateLimit, LocalRateLimit
from authority.redis.attempts import RedisAttemptGate
from authority.redis.rate_limits import RedisRateLimit

NOW = 1_740_830_400.0


async def test_replicas_share_one_bucket_and_the_hint_matches_the_local_limit(
    redis_url: str, prefix: str
) -> None:
    replicas = [
        RedisRateLimit(redis_url, name="revoke", per_minute=6, burst=2, prefix=prefix)
        for _ in range(2)
    ]
    local = LocalRateLimit(RateLimiter(6 / 60, 2))
    try:
        for i in range(2):
            await replicas[i].acquire("10.0.0.1", NOW)
            await local.acquire("10.0.0.1", NOW)
        with pytest.raises(Throttled) as shared:
            await replicas[0].acquire("10.0.0.1", NOW + 1)
        with pytest.raises(Throttled) as alone:
            await local.acquire("10.0.0.1", NOW + 1)
        assert shared.value.retry_after == pytest.approx(alone.value.retry_after)
        await replicas[1].acquire("10.0.0.1", NOW + 1 + shared.value.retry_after)
        await replicas[0].acquire("10.0.0.2", NOW + 1)  # another source, another bucket
    finally:
        for replica in replicas:
            await replica.close()


async def test_its_key_space_is_not_the_login_gates(redis_url: str, prefix: str) -> None:
    limit = RedisRateLimit(redis_url, name="revoke", per_minute=1, burst=1, prefix=prefix)
    gate = RedisAttemptGate(redis_url, prefix=prefix, source_per_minute=1, source_burst=1)
    try:
        await limit.acquire("10.0.0.1", NOW)
        with pytest.raises(Throttled):
            await limit.acquire("10.0.0.1", NOW)
        await gate.admit("alice", "10.0.0.1", NOW)  # the login budget is untouched
    finally:
        await limit.close()
        await gate.close()


async def test_without_redis_the_local_limit_still_limits() -> None:
    dead = RedisRateLimit(
        "redis://127.0.0.1:1/0", name="revoke", per_minute=6, burst=1, socket_timeout=0.5
    )
    with pytest.raises(Unavailable) as down:
        await dead.acquire("10.0.0.1", NOW)
    assert "127.0.0.1" not in str(down.value)
    limit = FallbackRateLimit(dead, LocalRateLimit(RateLimiter(6 / 60, 1)), name="revoke")
    await limit.acquire("10.0.0.1", NOW)
    with pytest.raises(Throttled):
        await limit.acquire("10.0.0.1", NOW)
    await dead.close()
