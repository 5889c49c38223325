"""The gate in front of credential checks: rate limits and lockout, shared or local."""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from authority.domain.errors import Unavailable
from authority.domain.throttle import AttemptGuard

log = structlog.get_logger(__name__)


class AttemptGate(Protocol):
    """Counts attempts before credentials are checked (see ``AttemptGuard``).

    ``admit`` raises ``Throttled`` (RESOURCE_EXHAUSTED with ``retry_after``).
    """

    async def admit(self, principal: str, source: str, now: float) -> None: ...

    async def failed(self, principal: str, now: float) -> None: ...

    async def succeeded(self, principal: str) -> None: ...

    async def client_failed(self, source: str, now: float) -> None: ...


class LocalAttemptGate:
    """The embedded default: the pure ``AttemptGuard`` in this process's memory."""

    def __init__(self, guard: AttemptGuard) -> None:
        self._guard = guard

    async def admit(self, principal: str, source: str, now: float) -> None:
        self._guard.admit(principal, source, now)

    async def failed(self, principal: str, now: float) -> None:
        self._guard.failed(principal, now)

    async def succeeded(self, principal: str) -> None:
        self._guard.succeeded(principal)

    async def client_failed(self, source: str, now: float) -> None:
        self._guard.client_failed(source, now)


class FallbackAttemptGate:
    """A shared gate (Redis) that falls back to a local one while the shared one is down.

    Logins keep working through a Redis outage, still limited, though per process rather
    than across the fleet; the failure and the recovery are logged once each.
    """

    def __init__(self, shared: AttemptGate, local: AttemptGate) -> None:
        self._shared = shared
        self._local = local
        self._degraded = False

    async def _call(self, method: str, *args: Any) -> None:
        try:
            await getattr(self._shared, method)(*args)
        except Unavailable:
            if not self._degraded:
                self._degraded = True
                log.warning("attempts.shared_limits_unavailable", fallback="per-process limits")
            await getattr(self._local, method)(*args)
            return
        if self._degraded:
            self._degraded = False
            log.info("attempts.shared_limits_restored")

    async def admit(self, principal: str, source: str, now: float) -> None:
        await self._call("admit", principal, source, now)

    async def failed(self, principal: str, now: float) -> None:
        await self._call("failed", principal, now)

    async def succeeded(self, principal: str) -> None:
        await self._call("succeeded", principal)

    async def client_failed(self, source: str, now: float) -> None:
        await self._call("client_failed", source, now)
