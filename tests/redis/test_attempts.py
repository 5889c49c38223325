"""RedisAttemptGate behaves exactly like AttemptGuard, with the state shared through Redis.

The behavioural tests are ports of tests/unit/test_throttle.py; the parity test replays
one random history against both and compares every outcome.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from authority.domain.errors import ErrorCode, InvalidArgument, ResourceExhausted, Unavailable
from authority.domain.throttle import AttemptGuard, Throttled
from authority.redis.attempts import RedisAttemptGate

T0 = 1_893_456_000.0  # 2030-01-01T00:00:00Z, an epoch timestamp like Clock.timestamp()

MakeGate = Callable[..., RedisAttemptGate]


async def admitted(gate: RedisAttemptGate, principal: str, source: str, now: float) -> bool:
    try:
        await gate.admit(principal, source, now)
    except Throttled:
        return False
    return True


async def test_parallel_attempts_are_counted_before_any_password_is_checked(
    make_gate: MakeGate,
) -> None:
    gate = make_gate()
    results = await asyncio.gather(*(admitted(gate, "alice", f"10.0.0.{i}", T0) for i in range(25)))
    assert sorted(results) == [False] * 15 + [True] * 10


async def test_throttled_says_when_to_retry(make_gate: MakeGate) -> None:
    gate = make_gate(principal_per_minute=2.0, principal_burst=1)
    await gate.admit("alice", "src", T0)
    with pytest.raises(Throttled) as caught:
        await gate.admit("alice", "src", T0 + 18.5)
    exc = caught.value
    assert isinstance(exc, ResourceExhausted)
    assert exc.code is ErrorCode.RESOURCE_EXHAUSTED
    assert exc.retry_after == pytest.approx(11.5)
    assert exc.message == "too many attempts; retry in 12 s"
    await gate.admit("alice", "src", T0 + 18.5 + exc.retry_after)


@pytest.mark.parametrize(("rate", "burst"), [(0.05, 1), (1.0, 3), (7.3, 6), (50.0, 2)])
async def test_the_retry_hint_is_exactly_when_a_token_is_there(
    make_gate: MakeGate, rate: float, burst: int
) -> None:
    gate = make_gate(principal_per_minute=rate * 60, principal_burst=burst)
    now = T0 + 0.123456
    for _ in range(burst):
        await gate.admit("k", "src", now)
    for i in range(3):
        with pytest.raises(Throttled) as caught:
            await gate.admit("k", f"src{i}", now)
        hint = caught.value.retry_after
        assert hint == pytest.approx(1.0 / rate, abs=1e-6)
        early = now + hint - max(1e-3, hint * 1e-3)
        assert not await admitted(gate, "k", f"early{i}", early)  # refusals consume nothing
        now += hint
        await gate.admit("k", f"late{i}", now)


async def test_time_running_backwards_does_not_mint_tokens(make_gate: MakeGate) -> None:
    gate = make_gate(principal_per_minute=60.0, principal_burst=1)
    await gate.admit("k", "a", T0)
    assert not await admitted(gate, "k", "b", T0 - 100)


async def test_the_source_limit_applies_across_principals(make_gate: MakeGate) -> None:
    gate = make_gate()
    for i in range(30):
        await gate.admit(f"user{i}", "203.0.113.9", T0)
    with pytest.raises(Throttled) as caught:
        await gate.admit("someone-else", "203.0.113.9", T0)
    assert caught.value.retry_after == pytest.approx(1.0)
    await gate.admit("someone-else", "198.51.100.1", T0)


async def test_a_refused_source_does_not_drain_the_principal(make_gate: MakeGate) -> None:
    gate = make_gate(source_burst=1, principal_burst=1)
    await gate.admit("mallory", "attacker", T0)
    with pytest.raises(Throttled):
        await gate.admit("alice", "attacker", T0)
    await gate.admit("alice", "home", T0)


async def test_limits_key_on_the_name_as_given(make_gate: MakeGate) -> None:
    gate = make_gate(principal_burst=1)
    await gate.admit("alice", "one", T0)
    with pytest.raises(Throttled):
        await gate.admit("alice", "two", T0)
    await gate.admit("ALICE", "two", T0)  # another name: the service canonicalises names


async def test_failures_from_one_source_lock_only_that_source(make_gate: MakeGate) -> None:
    gate = make_gate(source_burst=1, source_per_minute=1.0)
    for i in range(5):
        await gate.admit("bob", f"s{i}", T0)
        lock = await gate.failed("bob", "attacker", T0)
    assert lock is not None and lock.until == T0 + 1.0
    with pytest.raises(Throttled) as caught:
        await gate.admit("bob", "attacker", T0 + 0.25)
    assert caught.value.retry_after == pytest.approx(0.75)
    await gate.admit("bob", "home", T0 + 0.25)  # elsewhere, bob is not locked
    await gate.admit("carol", "fresh", T0 + 0.25)
    await gate.admit("bob", "attacker", T0 + 61)  # the lock has expired


async def test_ipv6_sources_in_one_64_share_a_lock_and_a_source_limit(make_gate: MakeGate) -> None:
    gate = make_gate(source_burst=2)
    for i in range(5):
        await gate.failed("bob", f"2001:db8:0:1::{i + 1}", T0)
    assert not await admitted(gate, "bob", "2001:db8:0:1:abcd::1", T0)
    await gate.admit("bob", "2001:db8:0:2::1", T0)
    await gate.admit("x", "2001:db8:0:3::1", T0)
    await gate.admit("y", "::ffff:10.9.9.9", T0)
    await gate.admit("y", "10.9.9.9", T0)  # the same source as its mapped form
    assert not await admitted(gate, "z", "10.9.9.9", T0)


async def test_a_source_known_to_the_principal_skips_the_principal_limit(
    make_gate: MakeGate,
) -> None:
    gate = make_gate(principal_burst=1, known_source_ttl=100.0)
    await gate.admit("alice", "home", T0)
    await gate.succeeded("alice", "home", T0)
    assert not await admitted(gate, "alice", "bot", T0)
    await gate.admit("alice", "home", T0 + 1)
    assert not await admitted(gate, "alice", "cafe", T0 + 1)
    await gate.admit("alice", "bot9", T0 + 100)  # spends the refilled budget
    assert not await admitted(gate, "alice", "home", T0 + 100)  # known no longer


async def test_lockout_grows_caps_and_success_resets_it(make_gate: MakeGate) -> None:
    gate = make_gate(
        principal_per_minute=6000.0,
        principal_burst=100,
        source_per_minute=6000.0,
        source_burst=100,
        lockout_threshold=5,
        lockout_max_delay=10.0,
    )
    now = T0
    waits: list[float | None] = []
    for _ in range(9):
        try:
            await gate.admit("dave", "src", now)
            waits.append(None)
        except Throttled as exc:  # locked by the previous failure: wait it out
            waits.append(round(exc.retry_after, 6))
            now += exc.retry_after
            await gate.admit("dave", "src", now)
        await gate.failed("dave", "src", now)
    assert waits == [None, None, None, None, None, 1.0, 2.0, 4.0, 8.0]
    with pytest.raises(Throttled) as caught:  # the ninth failure: 16 s, capped at 10
        await gate.admit("dave", "src", now)
    assert caught.value.retry_after == pytest.approx(10.0)
    now += 10.0
    await gate.admit("dave", "src", now)
    await gate.succeeded("dave", "src", now)
    for _ in range(4):  # a new streak: below the threshold again
        await gate.failed("dave", "src", now)
    await gate.admit("dave", "src", now)


async def test_failures_older_than_forget_after_are_forgotten(make_gate: MakeGate) -> None:
    gate = make_gate(lockout_threshold=3, lockout_max_delay=10.0, lockout_forget_after=100.0)
    await gate.failed("k", "a", T0)
    await gate.failed("k", "a", T0 + 50)
    await gate.failed("k", "a", T0 + 149)  # 99 s after the last: remembered, locks
    assert not await admitted(gate, "k", "a", T0 + 149)
    await gate.succeeded("k", "a", T0 + 149)
    await gate.failed("k", "a", T0)
    await gate.failed("k", "a", T0 + 50)
    await gate.failed("k", "a", T0 + 150)  # 100 s after the last: forgotten, a streak of one
    assert await admitted(gate, "k", "a", T0 + 150)


async def test_wrong_client_secrets_are_charged_to_the_source(make_gate: MakeGate) -> None:
    gate = make_gate(source_burst=3)
    for _ in range(3):
        await gate.client_failed("198.51.100.7", T0)
    with pytest.raises(Throttled) as caught:
        await gate.admit("alice", "198.51.100.7", T0)
    assert caught.value.retry_after == pytest.approx(1.0)
    await gate.client_failed("198.51.100.7", T0 + 0.5)  # refused charges change nothing
    await gate.admit("alice", "198.51.100.7", T0 + 1)


async def test_two_replicas_share_the_limits_and_the_lockout(make_gate: MakeGate) -> None:
    one = make_gate(principal_burst=2, lockout_threshold=1, lockout_base_delay=5.0)
    two = make_gate(principal_burst=2, lockout_threshold=1, lockout_base_delay=5.0)
    await one.admit("erin", "a", T0)
    await two.admit("erin", "b", T0)
    with pytest.raises(Throttled) as caught:
        await one.admit("erin", "c", T0)
    assert caught.value.retry_after == pytest.approx(6.0)  # 10 per minute
    await one.failed("erin", "d", T0 + 6)
    with pytest.raises(Throttled) as caught:
        await two.admit("erin", "d", T0 + 7)
    assert caught.value.retry_after == pytest.approx(4.0)
    await two.succeeded("erin", "c", T0 + 7)  # c is known to erin from now on
    await one.admit("erin", "c", T0 + 7)
    # Concurrent attempts through both replicas: still exactly the burst.
    results = await asyncio.gather(
        *(admitted((one, two)[i % 2], "frank", f"s{i}", T0) for i in range(10))
    )
    assert results.count(True) == 2


async def test_random_histories_match_the_local_guard(make_gate: MakeGate) -> None:
    """Every outcome and retry hint equals AttemptGuard's, for one seeded random history."""
    settings = {
        "principal_per_minute": 12.0,
        "principal_burst": 3,
        "source_per_minute": 30.0,
        "source_burst": 4,
        "lockout_threshold": 2,
        "lockout_base_delay": 0.5,
        "lockout_max_delay": 4.0,
        "lockout_forget_after": 20.0,
        "known_source_ttl": 30.0,
    }
    gate = make_gate(**settings)
    guard = AttemptGuard(**settings)  # type: ignore[arg-type]
    rng = random.Random(20300101)
    now = T0
    # Sources include IPv6 addresses (two in one /64) and an IPv4 address with its mapped
    # twin, so the keying (pair keys, /64, mapped IPv4) is compared too.
    sources = ["s1", "s2", "10.1.1.1", "::ffff:10.1.1.1", "2001:db8::1", "2001:db8::2:1", "::1"]
    for _ in range(600):
        now += rng.choice([0.0, 0.0, 0.1, 0.5, 1.3, 4.0, 25.0])
        principal = rng.choice(["ann", "Ann", "bo", "cy"])
        source = rng.choice(sources)
        action = rng.choice(["admit", "admit", "admit", "failed", "succeeded", "client_failed"])
        if action == "admit":
            local: float | None = None
            shared: float | None = None
            try:
                guard.admit(principal, source, now)
            except Throttled as exc:
                local = exc.retry_after
            try:
                await gate.admit(principal, source, now)
            except Throttled as exc:
                shared = exc.retry_after
            assert (local is None) == (shared is None), (principal, source, now)
            if local is not None:
                assert shared == pytest.approx(local, abs=1e-6)
        elif action == "failed":
            assert guard.failed(principal, source, now) == await gate.failed(principal, source, now)
        elif action == "succeeded":
            guard.succeeded(principal, source, now)
            await gate.succeeded(principal, source, now)
        else:
            guard.client_failed(source, now)
            await gate.client_failed(source, now)


async def test_every_key_expires(make_gate: MakeGate, raw_redis: Redis, prefix: str) -> None:
    gate = make_gate()
    now = time.time()
    await gate.admit("alice", "src", now)
    await gate.failed("alice", "src", now)
    await gate.succeeded("bob", "src", now)
    await gate.client_failed("other", now)
    keys = [key async for key in raw_redis.scan_iter(match=f"{prefix}:*")]
    assert len(keys) == 5  # source, principal, lock, known, other source
    ttls = [await raw_redis.pttl(key) for key in keys]
    # Nothing outlives what it remembers: a day for a streak, 30 days for a known source.
    assert all(0 < ttl <= 30 * 86_400_000 + 1000 for ttl in ttls), ttls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_is_unavailable_and_names_no_secret(
    make_gate: MakeGate,
) -> None:
    port = _free_port()
    gate = make_gate(url=f"redis://:hunter2@127.0.0.1:{port}/0", socket_timeout=1.0)
    for call in (
        gate.admit("alice", "src", T0),
        gate.failed("alice", "src", T0),
        gate.succeeded("alice", "src", T0),
        gate.client_failed("src", T0),
    ):
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await call
        assert time.monotonic() - started < 1.5
        assert caught.value.message.startswith("Redis is unavailable: ")
        assert "hunter2" not in caught.value.message
        assert str(port) not in caught.value.message
    await gate.close()
    await gate.close()
    with pytest.raises(Unavailable):
        await gate.admit("alice", "src", T0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"principal_per_minute": 0.0},
        {"principal_burst": 0},
        {"source_per_minute": -1.0},
        {"source_burst": 0},
        {"lockout_threshold": 0},
        {"lockout_base_delay": 0.0},
        {"lockout_max_delay": 0.5},
        {"lockout_forget_after": 60.0},
        {"max_keys": 0},
    ],
)
def test_configuration_is_validated_like_the_guard(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        RedisAttemptGate("redis://127.0.0.1:1/0", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        AttemptGuard(**kwargs)  # type: ignore[arg-type]
