"""Choosing the infrastructure: the embedded default or PostgreSQL and Redis.

Without AUTHORITY_DATABASE_URL the state lives in a local SQLite file; without
AUTHORITY_REDIS_URL rate limits live in this process's memory and there is no
fan-out (processes sharing a store learn revocations by polling it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import structlog

from authority.config import Settings
from authority.domain.throttle import AttemptGuard
from authority.ports.attempts import AttemptGate, FallbackAttemptGate, LocalAttemptGate
from authority.ports.fanout import Fanout, LocalFanout
from authority.store.base import Store
from authority.store.factory import make_store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backends:
    store: Store
    fanout: Fanout
    gate: AttemptGate
    mode: str


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


def build_backends(settings: Settings) -> Backends:
    store = make_store(settings.database_url, settings.database_path)
    if settings.redis_url:
        from authority.redis.attempts import RedisAttemptGate  # noqa: PLC0415 - optional
        from authority.redis.fanout import RedisFanout  # noqa: PLC0415 - optional

        prefix = settings.redis_prefix
        fanout: Fanout = RedisFanout(settings.redis_url, prefix=prefix)
        gate: AttemptGate = FallbackAttemptGate(
            RedisAttemptGate(settings.redis_url, prefix=prefix, **limits(settings)),
            LocalAttemptGate(AttemptGuard(**limits(settings))),
            ledger=store,
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
    return Backends(store=store, fanout=fanout, gate=gate, mode=mode)
