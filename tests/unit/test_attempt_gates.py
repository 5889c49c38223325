"""The fallback gate: shared limits while the shared store answers, local ones while not."""

from __future__ import annotations

import pytest

from authority.domain.errors import Unavailable
from authority.domain.throttle import AttemptGuard, Throttled
from authority.ports.attempts import FallbackAttemptGate, LocalAttemptGate


class SwitchableGate(LocalAttemptGate):
    """A real local gate that can be made to answer Unavailable, like a Redis outage."""

    def __init__(self) -> None:
        super().__init__(AttemptGuard(principal_per_minute=60, principal_burst=2))
        self.down = False

    async def admit(self, principal: str, source: str, now: float) -> None:
        if self.down:
            raise Unavailable("Redis is unavailable: cannot connect")
        await super().admit(principal, source, now)


async def test_an_outage_falls_back_to_local_limits_and_recovers() -> None:
    shared = SwitchableGate()
    local = LocalAttemptGate(AttemptGuard(principal_per_minute=60, principal_burst=1))
    gate = FallbackAttemptGate(shared, local)
    await gate.admit("alice", "s", 0.0)
    await gate.admit("alice", "s", 0.0)
    with pytest.raises(Throttled):
        await gate.admit("alice", "s", 0.0)  # the shared limit (burst 2)
    shared.down = True
    await gate.admit("bob", "s", 0.0)  # the local limit (burst 1) now applies
    with pytest.raises(Throttled):
        await gate.admit("bob", "s", 0.0)
    shared.down = False
    await gate.admit("bob", "s", 0.0)  # shared again: bob has his shared burst
