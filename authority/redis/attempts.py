"""``AttemptGuard``'s rate limits and lockout with the state in Redis, shared by every
replica and worker, so N processes do not multiply an attacker's budget by N.

The semantics are exactly ``authority.domain.throttle.AttemptGuard``'s (same keywords,
key normalisation, order of checks and retry hints); each operation is one Lua script,
so a check and its charge are atomic across processes, and concurrent attempts are all
counted before any password is checked.

Time: the scripts use the ``now`` the caller passes (``Clock.timestamp()``), not Redis's
``TIME``, so the hints match the local guard to the microsecond and tests drive time
explicitly. Replicas' clocks should agree (NTP); a replica whose clock lags sees a bucket
as slightly emptier, one that runs ahead as slightly fuller. TTLs are relative
durations derived from ``now``, so Redis's own clock does not matter; they only let
Redis drop state that has stopped mattering (a full bucket, a forgotten streak).

Keys (one Redis; not cluster-safe, since ``admit`` touches four keys):
``{prefix}:attempt:src:{source_key}``, ``{prefix}:attempt:user:{principal}`` (bucket
"full at" instants), ``{prefix}:attempt:lock:{pair_key}`` (a hash: count, last,
locked_until) and ``{prefix}:attempt:known:{pair_key}`` (present while the source is
known to the principal: the instant it stops being known, compared with ``now``
like every other time here).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from authority.domain.errors import Unavailable
from authority.domain.sources import source_key
from authority.domain.throttle import (
    KnownSources,
    Lock,
    Lockout,
    RateLimiter,
    Throttled,
    pair_key,
)
from authority.redis import REDIS_FAILURES, make_client, unavailable

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

# As in throttle.py: a microsecond plus one unit in the last place of ``now``, so that
# retrying at exactly ``now + hint`` is admitted despite float rounding.
_EPSILON = 1e-6
# Buckets are kept this long past the instant they are full again, so a replica whose
# clock lags a little still finds them; absent and full mean the same.
_BUCKET_MARGIN_MS = 1000
# Ten years, as in the scripts: a bound that keeps PX an integer Redis accepts.
_MAX_PX = 315_360_000_000

# Shared Lua: a GCRA bucket stored as the instant it is full again (seconds, %.17g so
# nothing is lost to Lua's 14-digit tostring). Returns nil if a token was taken, else
# the seconds until one is there. Refusals change nothing.
_ACQUIRE = """
local function fmt(x) return string.format('%.17g', x) end
-- Ten years: a bound that keeps PX an integer Redis accepts, for absurd configurations.
local function ms(seconds) return math.min(math.max(1, math.ceil(seconds * 1000)), 315360000000) end
local function acquire(key, now, slack, interval, tolerance, margin_ms)
  local full_at = math.max(tonumber(redis.call('GET', key)) or now, now)
  local admit_at = full_at - tolerance
  if now < admit_at - slack then
    return admit_at - now
  end
  full_at = full_at + interval
  redis.call('SET', key, fmt(full_at), 'PX', ms(full_at - now) + margin_ms)
  return nil
end
"""

# admit: the pair's lockout first (consumes nothing), then the source bucket, then the
# principal's unless the source is known to the principal.
#   KEYS  pair lock, source bucket, principal bucket, known pair
#   ARGV  now, slack, forget_after, source interval, source tolerance,
#         principal interval, principal tolerance, bucket margin (ms)
#   returns nil if admitted, else the retry-after in seconds as a %.17g string
_ADMIT = (
    _ACQUIRE
    + """
local now, slack, forget_after = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local margin = tonumber(ARGV[8])
local record = redis.call('HMGET', KEYS[1], 'last', 'locked_until')
if record[1] then
  if now - tonumber(record[1]) >= forget_after then
    redis.call('DEL', KEYS[1])
  else
    local locked_until = tonumber(record[2])
    if locked_until > now + slack then
      return fmt(locked_until - now)
    end
  end
end
local wait = acquire(KEYS[2], now, slack, tonumber(ARGV[4]), tonumber(ARGV[5]), margin)
if wait then return fmt(wait) end
local known = tonumber(redis.call('GET', KEYS[4]))
if known and known > now then return nil end
wait = acquire(KEYS[3], now, slack, tonumber(ARGV[6]), tonumber(ARGV[7]), margin)
if wait then return fmt(wait) end
return nil
"""
)

# client_failed: charge the source bucket, whatever the outcome.
#   KEYS  source bucket;  ARGV  now, slack, interval, tolerance, bucket margin (ms)
_CHARGE = (
    _ACQUIRE
    + """
acquire(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
        tonumber(ARGV[4]), tonumber(ARGV[5]))
return nil
"""
)

# failed: count a failure in the streak (forgotten once its last failure is
# forget_after old); from the threshold on, lock for base * 2^(count - threshold),
# capped, never shortening a lock already in place. The hash lives as long as the
# streak is remembered, and a lock never outlives it (forget_after >= max_delay).
#   KEYS  pair lock;  ARGV  now, threshold, base, max, forget_after
#   returns nil, or the end of the lock this failure imposes as a %.17g string
_FAILED = """
local function fmt(x) return string.format('%.17g', x) end
local function ms(seconds) return math.min(math.max(1, math.ceil(seconds * 1000)), 315360000000) end
local now, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
local base, cap, forget_after = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local count, last, locked_until = 0, now, now
local record = redis.call('HMGET', KEYS[1], 'count', 'last', 'locked_until')
if record[1] and now - tonumber(record[2]) < forget_after then
  count, last, locked_until = tonumber(record[1]), tonumber(record[2]), tonumber(record[3])
end
count = count + 1
last = math.max(last, now)
local lock = nil
if count >= threshold then
  lock = math.min(cap, base * 2 ^ math.min(count - threshold, 1000))
  locked_until = math.max(locked_until, now + lock)
end
redis.call('HSET', KEYS[1], 'count', count, 'last', fmt(last), 'locked_until', fmt(locked_until))
redis.call('PEXPIRE', KEYS[1], ms(last + forget_after - now))
if lock then return fmt(locked_until) end
return nil
"""


def _slack(now: float) -> float:
    return _EPSILON + math.ulp(now)


class RedisAttemptGate:
    """``AttemptGate`` with the state in Redis. Raises ``Unavailable`` when Redis cannot be
    reached; the caller decides (logins fail closed).

    The keywords and defaults are ``AttemptGuard``'s, validated the same way; ``max_keys``
    is accepted for parity but unused, since TTLs bound Redis's memory instead.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "authority",
        socket_timeout: float = 2.0,
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
        tracing: Tracing | None = None,
    ) -> None:
        # The local classes validate the configuration and derive the same parameters.
        principals = RateLimiter(principal_per_minute / 60.0, principal_burst, max_keys=max_keys)
        sources = RateLimiter(source_per_minute / 60.0, source_burst, max_keys=max_keys)
        self._lockout = Lockout(
            threshold=lockout_threshold,
            base_delay=lockout_base_delay,
            max_delay=lockout_max_delay,
            forget_after=lockout_forget_after,
            max_keys=max_keys,
        )
        self._known_ttl = KnownSources(known_source_ttl).ttl
        self._principal_interval = 1.0 / principals.rate_per_second
        self._principal_tolerance = (principals.burst - 1) * self._principal_interval
        self._source_interval = 1.0 / sources.rate_per_second
        self._source_tolerance = (sources.burst - 1) * self._source_interval
        self._prefix = f"{prefix}:attempt"
        self._client: Redis | None = make_client(url, socket_timeout, tracing)
        self._admit = self._client.register_script(_ADMIT)
        self._charge = self._client.register_script(_CHARGE)
        self._failed = self._client.register_script(_FAILED)

    async def close(self) -> None:
        """Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def admit(self, principal: str, source: str, now: float) -> None:
        """Count an attempt or raise ``Throttled`` (see ``AttemptGuard.admit``)."""
        pair = pair_key(principal, source)
        wait = await self._run(
            self._admit,
            [
                self._lock_key(pair),
                self._source_key(source),
                self._principal_key(principal),
                self._known_key(pair),
            ],
            [
                now,
                _slack(now),
                self._lockout.forget_after,
                self._source_interval,
                self._source_tolerance,
                self._principal_interval,
                self._principal_tolerance,
                _BUCKET_MARGIN_MS,
            ],
        )
        if wait is not None:
            raise Throttled(float(wait))

    async def failed(self, principal: str, source: str, now: float) -> Lock | None:
        """Record a wrong password from ``source``; from the threshold on, this locks the
        principal for that source. Returns the lock it imposes, if any."""
        lockout = self._lockout
        pair = pair_key(principal, source)
        until = await self._run(
            self._failed,
            [self._lock_key(pair)],
            [now, lockout.threshold, lockout.base_delay, lockout.max_delay, lockout.forget_after],
        )
        return None if until is None else Lock(pair, float(until))

    async def succeeded(self, principal: str, source: str, now: float) -> None:
        """Record a right password: the source's failure streak and any lock end, and the
        source is known to the principal for ``known_source_ttl``."""
        client = self._require_open()
        pair = pair_key(principal, source)
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(self._lock_key(pair))
                pipe.set(
                    self._known_key(pair),
                    repr(now + self._known_ttl),
                    px=min(math.ceil(self._known_ttl * 1000), _MAX_PX) + _BUCKET_MARGIN_MS,
                )
                await pipe.execute()
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc

    async def client_failed(self, source: str, now: float) -> None:
        """Charge a wrong client secret to its source (see ``AttemptGuard.client_failed``)."""
        await self._run(
            self._charge,
            [self._source_key(source)],
            [now, _slack(now), self._source_interval, self._source_tolerance, _BUCKET_MARGIN_MS],
        )

    async def _run(self, script: AsyncScript, keys: list[str], args: list[float | int]) -> Any:
        self._require_open()
        try:
            return await script(keys=keys, args=args)
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc

    def _require_open(self) -> Redis:
        if self._client is None:
            raise Unavailable("Redis is unavailable: the attempt gate is closed")
        return self._client

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:lock:{key}"

    def _source_key(self, source: str) -> str:
        return f"{self._prefix}:src:{source_key(source)}"

    def _principal_key(self, principal: str) -> str:
        return f"{self._prefix}:user:{principal}"

    def _known_key(self, pair: str) -> str:
        return f"{self._prefix}:known:{pair}"
