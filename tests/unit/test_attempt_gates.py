"""The fallback gate: shared limits while the shared store answers, local ones while not."""

from __future__ import annotations

import pytest

from authority.domain.errors import Unavailable
from authority.domain.throttle import AttemptGuard, Lock, Throttled
from authority.ports.attempts import FallbackAttemptGate, LocalAttemptGate


class SwitchableGate(LocalAttemptGate):
    """A real local gate that can be made to answer Unavailable, like a Redis outage."""

    def __init__(self) -> None:
        super().__init__(AttemptGuard(principal_per_minute=60, principal_burst=2))
        self.down = False

    async def failed(self, principal: str, source: str, now: float) -> Lock | None:
        if self.down:
            raise Unavailable("Redis is unavailable: cannot connect")
        return await super().failed(principal, source, now)

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


class Down(SwitchableGate):
    """A shared gate in the middle of an outage: every call answers Unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def failed(self, principal: str, source: str, now: float) -> Lock | None:
        raise Unavailable("Redis is unavailable: cannot connect")


class MemoryLedger:
    """The store's lockout ledger, in memory (the SQL versions pass the store contract)."""

    def __init__(self) -> None:
        self.locks: dict[str, float] = {}

    async def record_lockout(self, key: str, locked_until: float) -> None:
        self.locks[key] = max(locked_until, self.locks.get(key, locked_until))

    async def lockout_until(self, key: str, now: float) -> float | None:
        until = self.locks.get(key)
        return until if until is not None and until > now else None


async def test_a_lock_imposed_before_an_outage_holds_during_it() -> None:
    ledger = MemoryLedger()
    shared = SwitchableGate()
    gate = FallbackAttemptGate(shared, LocalAttemptGate(AttemptGuard()), ledger=ledger)
    locks = [await gate.failed("alice", "10.0.0.1", 0.0) for _ in range(5)]
    assert locks[:4] == [None] * 4 and locks[4] is not None
    assert ledger.locks == {locks[4].key: 1.0}
    shared.down = True  # the local gate never saw the lock ...
    with pytest.raises(Throttled) as caught:
        await gate.admit("alice", "10.0.0.1", 0.5)  # ... the ledger did
    assert caught.value.retry_after == pytest.approx(0.5)
    await gate.admit("alice", "10.0.0.2", 0.5)  # another source is not locked
    await gate.admit("alice", "10.0.0.1", 1.0)  # the lock has ended


async def test_a_lock_imposed_during_an_outage_is_recorded_for_every_replica() -> None:
    ledger = MemoryLedger()
    one = FallbackAttemptGate(Down(), LocalAttemptGate(AttemptGuard()), ledger=ledger)
    two = FallbackAttemptGate(Down(), LocalAttemptGate(AttemptGuard()), ledger=ledger)
    for _ in range(5):
        await one.failed("bob", "10.0.0.1", 0.0)
    with pytest.raises(Throttled):
        await two.admit("bob", "10.0.0.1", 0.5)
