"""Rate limits, progressive lockout and the attempt guard, driven by explicit times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.domain.errors import ErrorCode, InvalidArgument, ResourceExhausted
from authority.domain.throttle import (
    AttemptGuard,
    KnownSources,
    Lock,
    Lockout,
    RateLimiter,
    Throttled,
    pair_key,
)

T0 = 1_893_456_000.0  # 2030-01-01T00:00:00Z, an epoch timestamp like Clock.timestamp()

# -- RateLimiter ----------------------------------------------------------------------


def test_a_fresh_key_has_a_full_bucket_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate_per_second=2.0, burst=3)
    assert [limiter.try_acquire("k", T0) for _ in range(3)] == [None, None, None]
    assert limiter.try_acquire("k", T0) == pytest.approx(0.5)
    assert limiter.try_acquire("k", T0 + 0.5) is None
    assert limiter.try_acquire("k", T0 + 0.5) == pytest.approx(0.5)
    # A long idle period refills to the burst, never beyond it.
    assert [limiter.try_acquire("k", T0 + 100) for _ in range(4)][3] is not None


def test_keys_are_independent() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1)
    assert limiter.try_acquire("a", T0) is None
    assert limiter.try_acquire("a", T0) is not None
    assert limiter.try_acquire("b", T0) is None


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.05, max_value=20.0),
    burst=st.integers(min_value=1, max_value=8),
    offsets=st.lists(st.floats(min_value=0.0, max_value=60.0), min_size=1, max_size=150),
    start=st.sampled_from([0.0, 1.0, T0]),
)
def test_admissions_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: int, offsets: list[float], start: float
) -> None:
    limiter = RateLimiter(rate_per_second=rate, burst=burst)
    admitted = [
        t for t in sorted(start + o for o in offsets) if limiter.try_acquire("k", t) is None
    ]
    for i, first in enumerate(admitted):
        for j in range(i, len(admitted)):
            count = j - i + 1
            assert count <= burst + rate * (admitted[j] - first + 1e-5)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=50.0),
    burst=st.integers(min_value=1, max_value=6),
    start=st.one_of(st.floats(min_value=0.0, max_value=1e6), st.just(T0)),
    rounds=st.integers(min_value=1, max_value=5),
)
def test_the_retry_hint_is_exactly_when_a_token_is_there(
    rate: float, burst: int, start: float, rounds: int
) -> None:
    limiter = RateLimiter(rate_per_second=rate, burst=burst)
    now = start
    for _ in range(burst):
        assert limiter.try_acquire("k", now) is None
    for _ in range(rounds):
        hint = limiter.try_acquire("k", now)
        assert hint is not None and hint > 0
        assert hint == pytest.approx(1.0 / rate, abs=1e-6)  # now is rounded to 0.24 us
        early = now + hint - max(1e-3, hint * 1e-3)
        assert limiter.try_acquire("k", early) is not None  # refusals consume nothing
        now += hint
        assert limiter.try_acquire("k", now) is None


def test_the_lru_bound_holds_and_evicts_the_least_recently_used() -> None:
    limiter = RateLimiter(rate_per_second=0.001, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.try_acquire(key, T0) is None
    assert limiter.try_acquire("a", T0 + 1) is not None  # refused, but now most recent
    assert limiter.try_acquire("d", T0 + 2) is None
    assert len(limiter) == 3
    assert limiter.try_acquire("a", T0 + 3) is not None  # kept
    assert limiter.try_acquire("b", T0 + 3) is None  # was evicted: starts full again
    for i in range(1000):
        limiter.try_acquire(f"flood{i}", T0 + 4)
        assert len(limiter) <= 3


def test_idle_full_buckets_are_dropped() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=2)
    limiter.try_acquire("a", T0)
    limiter.try_acquire("b", T0)
    assert len(limiter) == 2
    limiter.try_acquire("c", T0 + 10)  # a and b have been full since T0 + 1
    assert len(limiter) == 1


def test_time_running_backwards_does_not_mint_tokens() -> None:
    limiter = RateLimiter(rate_per_second=1.0, burst=1)
    assert limiter.try_acquire("k", T0) is None
    assert limiter.try_acquire("k", T0 - 100) is not None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0.0, 1), {}),
        ((-1.0, 1), {}),
        ((math.inf, 1), {}),
        ((math.nan, 1), {}),
        ((1.0, 0), {}),
        ((1.0, 1), {"max_keys": 0}),
    ],
)
def test_rate_limiter_configuration_is_validated(
    args: tuple[float, int], kwargs: dict[str, int]
) -> None:
    with pytest.raises(InvalidArgument):
        RateLimiter(*args, **kwargs)


# -- Lockout --------------------------------------------------------------------------


def test_lockout_starts_at_the_threshold_doubles_and_caps() -> None:
    lockout = Lockout(threshold=3, base_delay=1.0, max_delay=10.0)
    now = T0
    locks = []
    for _ in range(9):
        lock = lockout.record_failure("k", now)
        locks.append(lock)
        assert lockout.retry_after("k", now) == lock
        now += 1000
    assert locks == [None, None, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_defaults_lock_after_five_failures_for_one_second_up_to_fifteen_minutes() -> None:
    lockout = Lockout()
    delays = [lockout.delay(n) for n in range(1, 17)]
    assert delays[:4] == [None] * 4
    assert delays[4:9] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[-1] == 900.0
    assert lockout.delay(10**6) == 900.0  # no overflow for absurd counts


def test_the_lock_expires_on_time() -> None:
    lockout = Lockout(threshold=1, base_delay=5.0, max_delay=60.0)
    assert lockout.retry_after("k", T0) is None
    assert lockout.record_failure("k", T0) == 5.0
    assert lockout.retry_after("k", T0 + 1) == pytest.approx(4.0)
    assert lockout.retry_after("k", T0 + 5) is None
    assert lockout.retry_after("other", T0 + 1) is None


def test_success_resets_the_streak() -> None:
    lockout = Lockout(threshold=2)
    lockout.record_failure("k", T0)
    assert lockout.record_failure("k", T0) == 1.0
    lockout.record_success("k")
    assert lockout.retry_after("k", T0) is None
    assert lockout.record_failure("k", T0) is None
    assert len(Lockout()) == 0
    lockout.record_success("never-seen")


def test_failures_older_than_forget_after_are_forgotten() -> None:
    lockout = Lockout(threshold=3, max_delay=10.0, forget_after=100.0)
    lockout.record_failure("k", T0)
    lockout.record_failure("k", T0 + 50)
    assert lockout.record_failure("k", T0 + 149) == 1.0  # 99 s after the last: remembered
    lockout.record_success("k")
    lockout.record_failure("k", T0)
    lockout.record_failure("k", T0 + 50)
    assert lockout.record_failure("k", T0 + 150) is None  # 100 s after the last: forgotten
    assert lockout.retry_after("k", T0 + 1000) is None
    assert len(lockout) == 0


def test_lockout_memory_is_bounded() -> None:
    lockout = Lockout(threshold=1, max_keys=10)
    for i in range(1000):
        lockout.record_failure(f"k{i}", T0)
        assert len(lockout) <= 10
    assert lockout.retry_after("k999", T0) is not None
    assert lockout.retry_after("k0", T0) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"base_delay": 0.0},
        {"base_delay": math.nan},
        {"max_delay": 0.5},
        {"max_delay": math.inf},
        {"forget_after": 899.0},
        {"max_keys": 0},
    ],
)
def test_lockout_configuration_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        Lockout(**kwargs)  # type: ignore[arg-type]


# -- AttemptGuard ---------------------------------------------------------------------


def test_parallel_attempts_are_counted_before_any_password_is_checked() -> None:
    guard = AttemptGuard()
    results = []
    for i in range(25):  # all arrive before any outcome is known; each from its own source
        try:
            guard.admit("alice", f"10.0.0.{i}", T0)
            results.append(True)
        except Throttled:
            results.append(False)
    assert results == [True] * 10 + [False] * 15


def test_throttled_says_when_to_retry() -> None:
    guard = AttemptGuard(principal_per_minute=2.0, principal_burst=1)
    guard.admit("alice", "src", T0)
    with pytest.raises(Throttled) as caught:
        guard.admit("alice", "src", T0 + 18.5)
    exc = caught.value
    assert isinstance(exc, ResourceExhausted)
    assert exc.code is ErrorCode.RESOURCE_EXHAUSTED
    assert exc.retry_after == pytest.approx(11.5)
    assert exc.message == "too many attempts; retry in 12 s"
    guard.admit("alice", "src", T0 + 18.5 + exc.retry_after)
    assert Throttled(0.2).message == "too many attempts; retry in 1 s"


def test_the_source_limit_applies_across_principals() -> None:
    guard = AttemptGuard()
    for i in range(30):
        guard.admit(f"user{i}", "203.0.113.9", T0)
    with pytest.raises(Throttled) as caught:
        guard.admit("someone-else", "203.0.113.9", T0)
    assert caught.value.retry_after == pytest.approx(1.0)
    guard.admit("someone-else", "198.51.100.1", T0)


def test_a_refused_source_does_not_drain_the_principal() -> None:
    guard = AttemptGuard(source_burst=1, principal_burst=1)
    guard.admit("mallory", "attacker", T0)
    with pytest.raises(Throttled):
        guard.admit("alice", "attacker", T0)
    guard.admit("alice", "home", T0)


def test_limits_key_on_the_name_as_given() -> None:
    """The service canonicalises names at its entry; the guard adds no folding of its own,
    so its keys are exactly the names lookups use."""
    guard = AttemptGuard(principal_burst=1)
    guard.admit("alice", "one", T0)
    with pytest.raises(Throttled):
        guard.admit("alice", "two", T0)
    guard.admit("ALICE", "two", T0)  # another name (no principal, unless it exists)
    assert pair_key("alice", "10.0.0.1") != pair_key("ALICE", "10.0.0.1")


def test_pair_keys_cannot_collide_and_key_ipv6_by_its_64() -> None:
    # Names contain no control characters, so the first one splits a pair key.
    assert pair_key("a:b", "10.0.0.1") == "a:b\x1f10.0.0.1"
    assert pair_key("alice", "2001:db8:1:2::1") == pair_key("alice", "2001:db8:1:2:ffff::9")
    assert pair_key("alice", "2001:db8:1:3::1") != pair_key("alice", "2001:db8:1:2::1")
    assert pair_key("alice", "::ffff:192.0.2.7") == pair_key("alice", "192.0.2.7")


def test_failures_from_one_source_lock_only_that_source() -> None:
    guard = AttemptGuard(source_burst=1, source_per_minute=1.0)
    for _ in range(4):
        assert guard.failed("bob", "attacker", T0) is None
    lock = guard.failed("bob", "attacker", T0)
    assert lock == Lock(pair_key("bob", "attacker"), T0 + 1.0)
    with pytest.raises(Throttled) as caught:
        guard.admit("bob", "attacker", T0 + 0.25)
    assert caught.value.retry_after == pytest.approx(0.75)
    guard.admit("bob", "home", T0 + 0.25)  # the owner elsewhere: not locked
    guard.admit("carol", "fresh", T0 + 0.25)  # the refusal consumed nothing
    guard.admit("bob", "attacker", T0 + 61)  # the lock has expired (and the bucket refilled)


def test_ipv6_sources_in_one_64_share_a_lock_and_a_source_limit() -> None:
    guard = AttemptGuard(source_burst=2)
    for i in range(5):
        guard.failed("bob", f"2001:db8:0:1::{i + 1}", T0)
    with pytest.raises(Throttled):
        guard.admit("bob", "2001:db8:0:1:abcd::1", T0)  # same /64: locked
    guard.admit("bob", "2001:db8:0:2::1", T0)  # next /64: free
    guard.admit("x", "2001:db8:0:3::1", T0)
    guard.admit("y", "2001:db8:0:3::2", T0)
    with pytest.raises(Throttled):
        guard.admit("z", "2001:db8:0:3::3", T0)  # one source bucket for the /64


def test_a_source_known_to_the_principal_skips_the_principal_limit_only() -> None:
    guard = AttemptGuard(principal_burst=1, known_source_ttl=100.0)
    guard.admit("alice", "home", T0)
    guard.succeeded("alice", "home", T0)
    for i in range(3):  # a distributed attack has spent alice's budget
        with pytest.raises(Throttled):
            guard.admit("alice", f"bot{i}", T0)
    guard.admit("alice", "home", T0 + 1)  # the owner at home is still admitted
    with pytest.raises(Throttled):
        guard.admit("alice", "cafe", T0 + 1)  # a new place waits like the bots
    for _ in range(5):  # home's own lockout still applies to home
        guard.failed("alice", "home", T0 + 2)
    with pytest.raises(Throttled):
        guard.admit("alice", "home", T0 + 2)
    guard.admit("alice", "bot9", T0 + 100)  # spends the refilled budget
    with pytest.raises(Throttled):  # known no longer, once ttl has passed since the login
        guard.admit("alice", "home", T0 + 100)


def test_known_sources_expire_and_stay_bounded() -> None:
    known = KnownSources(10.0, max_keys=2)
    known.remember("a", T0)
    known.remember("b", T0)
    known.remember("c", T0)
    assert len(known) == 2 and "a" not in known
    assert known.known("b", T0 + 9.9) and not known.known("b", T0 + 10)
    with pytest.raises(InvalidArgument):
        KnownSources(0.0)


def test_lockout_grows_through_the_guard_and_success_resets_it() -> None:
    guard = AttemptGuard(principal_per_minute=6000.0, principal_burst=100)
    now = T0
    locks = []
    for _ in range(8):
        try:
            guard.admit("dave", "src", now)
        except Throttled as exc:  # locked by the previous failure: wait it out
            now += exc.retry_after
            guard.admit("dave", "src", now)
        lock = guard.failed("dave", "src", now)
        locks.append(None if lock is None else round(lock.until - now, 6))
    assert locks == [None, None, None, None, 1.0, 2.0, 4.0, 8.0]
    now += 8.0
    guard.admit("dave", "src", now)
    guard.succeeded("dave", "src", now)
    guard.admit("dave", "src", now)
    assert guard.failed("dave", "src", now) is None


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
def test_guard_configuration_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        AttemptGuard(**kwargs)  # type: ignore[arg-type]
