"""``RateLimiter`` buckets in Redis, shared by every replica and worker, in a key space
of their own: ``{prefix}:limit:{name}:{key}``.

One Lua script per acquisition (the login gate's bucket, ``authority.redis.attempts``),
so a check and its charge are atomic across processes. Time is the caller's ``now``, as
for the login gate.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from authority.domain.errors import Unavailable
from authority.domain.throttle import RateLimiter, Throttled
from authority.redis import REDIS_FAILURES, make_client, unavailable

if TYPE_CHECKING:
    from authority.observability.otel import Tracing
from authority.redis.attempts import _ACQUIRE  # the one GCRA bucket, shared with the gate

_EPSILON = 1e-6
_BUCKET_MARGIN_MS = 1000

#   KEYS  bucket;  ARGV  now, slack, interval, tolerance, bucket margin (ms)
#   returns nil if a token was taken, else the retry-after in seconds (%.17g string)
_TAKE = (
    _ACQUIRE
    + """
local wait = acquire(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                     tonumber(ARGV[4]), tonumber(ARGV[5]))
if wait then return fmt(wait) end
return nil
"""
)


class RedisRateLimit:
    """``RateLimit`` with its buckets in Redis; raises ``Unavailable`` when Redis cannot be
    reached (``FallbackRateLimit`` then limits per process)."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        per_minute: float,
        burst: int,
        prefix: str = "authority",
        socket_timeout: float = 2.0,
        tracing: Tracing | None = None,
    ) -> None:
        limiter = RateLimiter(per_minute / 60.0, burst)  # validates, as the local limit does
        self._interval = 1.0 / limiter.rate_per_second
        self._tolerance = (limiter.burst - 1) * self._interval
        self._prefix = f"{prefix}:limit:{name}"
        self._client: Redis | None = make_client(url, socket_timeout, tracing)
        self._take = self._client.register_script(_TAKE)

    async def close(self) -> None:
        """Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def acquire(self, key: str, now: float) -> None:
        if self._client is None:
            raise Unavailable("Redis is unavailable: the rate limit is closed")
        slack = _EPSILON + math.ulp(now)
        try:
            wait = await self._take(
                keys=[f"{self._prefix}:{key}"],
                args=[now, slack, self._interval, self._tolerance, _BUCKET_MARGIN_MS],
            )
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc
        if wait is not None:
            raise Throttled(float(wait))
