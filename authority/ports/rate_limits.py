"""Per-key rate limits outside the login gate (token-holder revocation, per source).

The same token buckets as the login gate (``RateLimiter``; in Redis, the same Lua), in
a key space of their own, so a revocation flood never spends a source's login budget
and a login flood never blocks a logout.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from authority.domain.errors import Unavailable
from authority.domain.throttle import RateLimiter, Throttled

log = structlog.get_logger(__name__)


class RateLimit(Protocol):
    """``acquire`` takes one token for ``key`` or raises ``Throttled`` (RESOURCE_EXHAUSTED
    with ``retry_after``)."""

    async def acquire(self, key: str, now: float) -> None: ...


class LocalRateLimit:
    """The embedded default: a ``RateLimiter`` in this process's memory."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def acquire(self, key: str, now: float) -> None:
        wait = self._limiter.try_acquire(key, now)
        if wait is not None:
            raise Throttled(wait)


class FallbackRateLimit:
    """A shared limit (Redis) that falls back to a local one while the shared one is down:
    still limited during an outage, though per process rather than across the fleet."""

    def __init__(self, shared: RateLimit, local: RateLimit, *, name: str) -> None:
        self._shared = shared
        self._local = local
        self._name = name
        self._degraded = False

    async def acquire(self, key: str, now: float) -> None:
        try:
            await self._shared.acquire(key, now)
        except Unavailable:
            if not self._degraded:
                self._degraded = True
                log.warning("limits.shared_limit_unavailable", limit=self._name)
            await self._local.acquire(key, now)
            return
        if self._degraded:
            self._degraded = False
            log.info("limits.shared_limit_restored", limit=self._name)
