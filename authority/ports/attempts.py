"""The gate in front of credential checks: rate limits and lockout, shared or local."""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from authority.domain.errors import Unavailable
from authority.domain.throttle import AttemptGuard, Lock, Throttled, pair_key

log = structlog.get_logger(__name__)


class AttemptGate(Protocol):
    """Counts attempts before credentials are checked (see ``AttemptGuard``).

    ``admit`` raises ``Throttled`` (RESOURCE_EXHAUSTED with ``retry_after``).
    """

    async def admit(self, principal: str, source: str, now: float) -> None: ...

    async def failed(self, principal: str, source: str, now: float) -> Lock | None: ...

    async def succeeded(self, principal: str, source: str, now: float) -> None: ...

    async def client_failed(self, source: str, now: float) -> None: ...


class LockoutLedger(Protocol):
    """Durable lockouts (the store), which outlive a Redis outage or restart."""

    async def record_lockout(self, key: str, locked_until: float) -> None: ...

    async def lockout_until(self, key: str, now: float) -> float | None: ...


class LocalAttemptGate:
    """The embedded default: the pure ``AttemptGuard`` in this process's memory."""

    def __init__(self, guard: AttemptGuard) -> None:
        self._guard = guard

    async def admit(self, principal: str, source: str, now: float) -> None:
        self._guard.admit(principal, source, now)

    async def failed(self, principal: str, source: str, now: float) -> Lock | None:
        return self._guard.failed(principal, source, now)

    async def succeeded(self, principal: str, source: str, now: float) -> None:
        self._guard.succeeded(principal, source, now)

    async def client_failed(self, source: str, now: float) -> None:
        self._guard.client_failed(source, now)


class FallbackAttemptGate:
    """A shared gate (Redis) that falls back to a local one while the shared one is down.

    Logins keep working through a Redis outage, still limited, though per process rather
    than across the fleet; the failure and the recovery are logged once each.

    With a ``ledger`` (the store), every lock either gate imposes is also written there,
    and ``admit`` refuses what the ledger says is locked before asking either gate. A
    lock imposed through Redis therefore stays in force on every replica while Redis is
    down (the local gates, which start empty, never saw it) and after Redis comes back
    empty; and a lock imposed by one replica's local gate during the outage holds on
    the others. It costs a primary-key read per password attempt and a write per lock
    (not per failure), next to an argon2 verification and the audit write of a failure.
    """

    def __init__(
        self, shared: AttemptGate, local: AttemptGate, *, ledger: LockoutLedger | None = None
    ) -> None:
        self._shared = shared
        self._local = local
        self._ledger = ledger
        self._degraded = False

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            result = await getattr(self._shared, method)(*args)
        except Unavailable:
            if not self._degraded:
                self._degraded = True
                log.warning("attempts.shared_limits_unavailable", fallback="per-process limits")
            return await getattr(self._local, method)(*args)
        if self._degraded:
            self._degraded = False
            log.info("attempts.shared_limits_restored")
        return result

    async def admit(self, principal: str, source: str, now: float) -> None:
        if self._ledger is not None:
            until = await self._ledger.lockout_until(pair_key(principal, source), now)
            if until is not None and until > now:
                raise Throttled(until - now)
        await self._call("admit", principal, source, now)

    async def failed(self, principal: str, source: str, now: float) -> Lock | None:
        lock: Lock | None = await self._call("failed", principal, source, now)
        if lock is not None and self._ledger is not None:
            await self._ledger.record_lockout(lock.key, lock.until)
        return lock

    async def succeeded(self, principal: str, source: str, now: float) -> None:
        await self._call("succeeded", principal, source, now)

    async def client_failed(self, source: str, now: float) -> None:
        await self._call("client_failed", source, now)
