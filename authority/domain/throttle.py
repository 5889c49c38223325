"""Rate limits and progressive lockout for password attempts: pure, in-process, bounded.

Every method takes ``now`` (seconds, e.g. ``Clock.timestamp()``) instead of reading a
clock, so tests drive time explicitly. Nothing here locks: call it from one thread
(the event loop); each call is a few dictionary operations.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from authority.domain.errors import InvalidArgument, ResourceExhausted
from authority.domain.sources import source_key

# Slack for float rounding, so that retrying at exactly ``now + hint`` is admitted:
# a microsecond, plus one unit in the last place of ``now`` (0.24 us for epoch seconds),
# since ``now + hint`` itself is rounded to that.
_EPSILON = 1e-6
# Beyond this the delay has long since hit max_delay; it keeps 2.0**n finite.
_MAX_EXPONENT = 1000


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(message)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _slack(now: float) -> float:
    return _EPSILON + math.ulp(now)


class RateLimiter:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate_per_second``.

    Each bucket is stored as one float, the instant it will be full again (the
    "theoretical arrival time" of GCRA), which is the same bucket in less memory and
    makes an idle full bucket recognisable (that instant has passed) and so droppable.

    Memory is bounded by ``max_keys``: past it the least recently used key is evicted
    and, if it comes back, starts with a full bucket. That errs towards admitting, which
    is acceptable because evicting a key takes ``max_keys`` other keys being used more
    recently than it — far more than the legitimate working set, and more requests than
    the other limits (per source, lockout) let one attacker make; refusing new keys
    instead would let a flood of keys lock everyone out, and never forgetting would let
    it exhaust memory. Size ``max_keys`` well above the number of keys active at once.
    """

    def __init__(self, rate_per_second: float, burst: int, *, max_keys: int = 100_000) -> None:
        _require(_positive(rate_per_second), "the rate must be a positive number")
        _require(burst >= 1, "the burst must be at least 1")
        _require(max_keys >= 1, "max_keys must be at least 1")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.max_keys = max_keys
        self._interval = 1.0 / rate_per_second
        # A request is admitted while the bucket-full instant is at most this far ahead.
        self._tolerance = (burst - 1) * self._interval
        # Instants are kept relative to the first ``now`` seen: small numbers keep their
        # sub-microsecond precision through many additions, epoch seconds do not.
        self._origin: float | None = None
        self._full_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._full_at)

    def try_acquire(self, key: str, now: float) -> float | None:
        """Take a token: None if admitted, else the seconds until a token will be there
        (retrying at ``now`` plus that is admitted, barring other use of the key)."""
        if self._origin is None:
            self._origin = now
        t = now - self._origin
        full_at = max(self._full_at.get(key, t), t)
        admit_at = full_at - self._tolerance
        if t < admit_at - _slack(now):
            self._full_at.move_to_end(key)  # refused keys stay: evicting would refill them
            return admit_at - t
        self._full_at[key] = full_at + self._interval
        self._full_at.move_to_end(key)
        self._trim(t)
        return None

    def _trim(self, t: float) -> None:
        """Drop full buckets from the old end (amortised: each key goes at most once per
        use), then evict least recently used keys beyond ``max_keys``."""
        while self._full_at:
            oldest = next(iter(self._full_at))
            if self._full_at[oldest] > t:
                break
            del self._full_at[oldest]
        while len(self._full_at) > self.max_keys:
            self._full_at.popitem(last=False)


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    locked_until: float


class Lockout:
    """Progressive lockout: after ``threshold`` consecutive failures a key is locked for
    ``base_delay * 2**(failures - threshold)`` seconds, capped at ``max_delay``. A streak
    whose last failure is ``forget_after`` old is forgotten; a success ends it.

    Doubling with a cap slows online guessing to a few hundred guesses a day per account
    while an owner who mistypes a few times waits seconds, not hours; the cap keeps an
    attacker from locking an owner out for longer than ``max_delay`` at a time.
    Memory is bounded like RateLimiter's, evicting the least recently touched key.
    """

    def __init__(
        self,
        threshold: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        forget_after: float = 86_400.0,
        max_keys: int = 100_000,
    ) -> None:
        _require(threshold >= 1, "the lockout threshold must be at least 1")
        _require(_positive(base_delay), "the base lockout delay must be a positive number")
        _require(
            _positive(max_delay) and max_delay >= base_delay,
            "the maximum lockout delay must be at least the base delay",
        )
        # Otherwise a lock could be forgotten before it expires.
        _require(
            _positive(forget_after) and forget_after >= max_delay,
            "forget_after must be at least the maximum lockout delay",
        )
        _require(max_keys >= 1, "max_keys must be at least 1")
        self.threshold = threshold
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def delay(self, failures: int) -> float | None:
        """The lock that the ``failures``-th consecutive failure imposes, if any."""
        if failures < self.threshold:
            return None
        exponent = min(failures - self.threshold, _MAX_EXPONENT)
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again, or None if it is not locked."""
        record = self._current(key, now)
        if record is None or record.locked_until <= now + _slack(now):
            return None
        return record.locked_until - now

    def record_failure(self, key: str, now: float) -> float | None:
        """Count a failure; return the lock duration if this failure locks the key."""
        record = self._current(key, now) or _Failures(count=0, last=now, locked_until=now)
        record.count += 1
        record.last = max(record.last, now)
        self._records[key] = record
        self._records.move_to_end(key)
        self._trim(now)
        lock = self.delay(record.count)
        if lock is not None:
            record.locked_until = max(record.locked_until, now + lock)
        return lock

    def locked_until(self, key: str) -> float | None:
        """When the lock on ``key`` ends (None if it has no streak)."""
        record = self._records.get(key)
        return None if record is None else record.locked_until

    def record_success(self, key: str) -> None:
        """A success ends the streak and any lock."""
        self._records.pop(key, None)

    def _current(self, key: str, now: float) -> _Failures | None:
        record = self._records.get(key)
        if record is None:
            return None
        if now - record.last >= self.forget_after:
            del self._records[key]
            return None
        self._records.move_to_end(key)
        return record

    def _trim(self, now: float) -> None:
        while self._records:
            oldest = next(iter(self._records))
            if now - self._records[oldest].last < self.forget_after:
                break
            del self._records[oldest]
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)


class KnownSources:
    """The (principal, source) pairs that logged in successfully within ``ttl`` seconds.

    The per-principal limit does not apply to them (see ``AttemptGuard``). Memory is
    bounded like RateLimiter's; an evicted pair is merely unknown again, which charges
    it to the per-principal limit: the safe direction.
    """

    def __init__(self, ttl: float, *, max_keys: int = 100_000) -> None:
        _require(_positive(ttl), "the known-source lifetime must be a positive number")
        _require(max_keys >= 1, "max_keys must be at least 1")
        self.ttl = ttl
        self.max_keys = max_keys
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, key: object) -> bool:
        return key in self._until

    def known(self, key: str, now: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True

    def remember(self, key: str, now: float) -> None:
        self._until[key] = now + self.ttl
        self._until.move_to_end(key)
        while self._until:
            oldest = next(iter(self._until))
            if self._until[oldest] > now:
                break
            del self._until[oldest]
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)


class Throttled(ResourceExhausted):
    """Refused by a rate limit or a lockout; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        # Rounded up, so that a client obeying the message is not refused again.
        super().__init__(f"too many attempts; retry in {max(1, math.ceil(retry_after))} s")


@dataclass(frozen=True, slots=True)
class Lock:
    """A lockout a failure imposed: ``key`` (see ``pair_key``) refused until ``until``."""

    key: str
    until: float


# Names cannot contain control characters (``validate_name``), so the first one splits a
# pair key unambiguously whatever the source looks like.
_PAIR_SEPARATOR = "\x1f"


def pair_key(principal: str, source: str) -> str:
    """The lockout key of ``principal`` tried from ``source``: the name exactly as the
    service passes it (it canonicalises names once, at its entry, for lookups and limits
    alike) and the source's limit key (an IPv6 address counts by its /64)."""
    return f"{principal}{_PAIR_SEPARATOR}{source_key(source)}"


class AttemptGuard:
    """The gate in front of password checks.

    - A progressive lockout per (principal, source): failures from one source lock that
      principal for that source only, so nobody can lock an owner out from elsewhere.
    - A limit per source across principals (password spraying from one address).
    - A slower limit per principal across sources, which bounds guessing distributed
      over many sources. Sources from which the principal logged in successfully within
      ``known_source_ttl`` are exempt from it (OWASP's "device cookie" idea, keyed by
      source address), so a distributed attack cannot shut the owner out of their usual
      networks either; a new source waits for the principal's budget while one lasts.

    Call ``admit`` before checking the password: it counts the attempt, so many
    concurrent guesses cannot all pass before the first failure is recorded. Then call
    ``failed`` or ``succeeded`` with the outcome. ``source`` is the client's address
    (``authority.domain.sources.peer_address``); limits key it with ``source_key``.
    """

    def __init__(
        self,
        *,
        principal_per_minute: float = 10.0,
        principal_burst: int = 10,
        source_per_minute: float = 60.0,
        source_burst: int = 30,
        lockout_threshold: int = 5,
        lockout_base_delay: float = 1.0,
        lockout_max_delay: float = 900.0,
        lockout_forget_after: float = 86_400.0,
        known_source_ttl: float = 30 * 86_400.0,
        max_keys: int = 100_000,
    ) -> None:
        self._principals = RateLimiter(
            principal_per_minute / 60.0, principal_burst, max_keys=max_keys
        )
        self._sources = RateLimiter(source_per_minute / 60.0, source_burst, max_keys=max_keys)
        self._lockout = Lockout(
            threshold=lockout_threshold,
            base_delay=lockout_base_delay,
            max_delay=lockout_max_delay,
            forget_after=lockout_forget_after,
            max_keys=max_keys,
        )
        self._known = KnownSources(known_source_ttl, max_keys=max_keys)

    def admit(self, principal: str, source: str, now: float) -> None:
        """Count an attempt or raise Throttled.

        A locked (principal, source) is refused without consuming anything. The source
        is charged next, and the principal only if the source was admitted and is not
        known to the principal: a source over its limit cannot drain other people's
        principal budgets, while one that hits a throttled principal still pays.
        """
        pair = pair_key(principal, source)
        locked = self._lockout.retry_after(pair, now)
        if locked is not None:
            raise Throttled(locked)
        wait = self._sources.try_acquire(source_key(source), now)
        if wait is not None:
            raise Throttled(wait)
        if self._known.known(pair, now):
            return
        wait = self._principals.try_acquire(principal, now)
        if wait is not None:
            raise Throttled(wait)

    def failed(self, principal: str, source: str, now: float) -> Lock | None:
        """Record a wrong password from ``source``; return the lock if this one locks."""
        pair = pair_key(principal, source)
        if self._lockout.record_failure(pair, now) is None:
            return None
        until = self._lockout.locked_until(pair)
        return None if until is None else Lock(pair, until)

    def succeeded(self, principal: str, source: str, now: float) -> None:
        """Record a right password: the source's failure streak and lock end, and the
        source is known to the principal from now on."""
        pair = pair_key(principal, source)
        self._lockout.record_success(pair)
        self._known.remember(pair, now)

    def client_failed(self, source: str, now: float) -> None:
        """Charge a wrong client secret to its source address.

        Service clients are not rate-limited or locked out themselves: their secrets are
        256-bit random values that cannot be guessed, a gateway exchanging tokens for many
        users from one address would hit any per-client cap, and a lockout would only let
        anyone lock a service out. A source spraying wrong secrets still spends the
        budget its password attempts draw on.
        """
        self._sources.try_acquire(source_key(source), now)
