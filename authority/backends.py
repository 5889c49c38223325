"""Choosing the infrastructure: the embedded default or PostgreSQL and Redis.

Without AUTHORITY_DATABASE_URL the state lives in a local SQLite file; without
AUTHORITY_REDIS_URL rate limits live in this process's memory and there is no
fan-out (processes sharing a store learn revocations by polling it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import structlog

from authority.config import Settings
from authority.domain.throttle import AttemptGuard, RateLimiter
from authority.ports.attempts import AttemptGate, FallbackAttemptGate, LocalAttemptGate
from authority.ports.fanout import Fanout, LocalFanout
from authority.ports.rate_limits import FallbackRateLimit, LocalRateLimit, RateLimit
from authority.store.base import Store
from authority.store.factory import make_store

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backends:
    store: Store
    fanout: Fanout
    gate: AttemptGate
    mode: str
    revoke_limit: RateLimit  # token-holder Revoke, per source address


class Limits(TypedDict):
    principal_per_minute: float
    principal_burst: int
    source_per_minute: float
    source_burst: int
    lockout_threshold: int
    lockout_base_delay: float
    lockout_max_delay: float


def limits(settings: Settings) -> Limits:
    """The limiter settings, shared by the local and the Redis gate."""
    return {
        "principal_per_minute": settings.login_attempts_per_minute,
        "principal_burst": settings.login_attempts_per_minute,
        "source_per_minute": settings.source_attempts_per_minute,
        "source_burst": max(1, settings.source_attempts_per_minute // 2),
        "lockout_threshold": settings.lockout_threshold,
        "lockout_base_delay": settings.lockout_base.total_seconds(),
        "lockout_max_delay": settings.lockout_max.total_seconds(),
    }


def revoke_limiter(settings: Settings) -> RateLimiter:
    per_minute = settings.revoke_attempts_per_minute
    return RateLimiter(per_minute / 60.0, max(1, per_minute // 2))


def build_backends(settings: Settings, tracing: Tracing | None = None) -> Backends:
    """``tracing``: the Redis commands of a request become its child spans."""
    store = make_store(settings.database_url, settings.database_path)
    revoke_limit: RateLimit = LocalRateLimit(revoke_limiter(settings))
    if settings.redis_url:
        from authority.redis.attempts import RedisAttemptGate  # noqa: PLC0415 - optional
        from authority.redis.fanout import RedisFanout  # noqa: PLC0415 - optional
        from authority.redis.rate_limits import RedisRateLimit  # noqa: PLC0415 - optional

        prefix = settings.redis_prefix
        fanout: Fanout = RedisFanout(settings.redis_url, prefix=prefix, tracing=tracing)
        gate: AttemptGate = FallbackAttemptGate(
            RedisAttemptGate(
                settings.redis_url, prefix=prefix, tracing=tracing, **limits(settings)
            ),
            LocalAttemptGate(AttemptGuard(**limits(settings))),
            ledger=store,
        )
        limiter = revoke_limiter(settings)
        revoke_limit = FallbackRateLimit(
            RedisRateLimit(
                settings.redis_url,
                name="revoke",
                per_minute=limiter.rate_per_second * 60.0,
                burst=limiter.burst,
                prefix=prefix,
                tracing=tracing,
            ),
            revoke_limit,
            name="revoke",
        )
    else:
        fanout = LocalFanout()
        gate = LocalAttemptGate(AttemptGuard(**limits(settings)))
        if settings.database_url:
            log.warning(
                "config.no_redis",
                hint="without AUTHORITY_REDIS_URL, replicas learn revocations by polling the"
                " database (AUTHORITY_REVOCATION_POLL) and rate limits are per process",
            )
    mode = ("postgresql" if settings.database_url else "sqlite") + (
        "+redis" if settings.redis_url else ""
    )
    return Backends(store=store, fanout=fanout, gate=gate, mode=mode, revoke_limit=revoke_limit)
