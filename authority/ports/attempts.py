"""The gate in front of credential checks: rate limits and lockout, shared or local."""

from __future__ import annotations

from typing import Protocol

from authority.domain.throttle import AttemptGuard


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
