"""The revocation fan-out over one Redis: a cache of live revocations plus pub/sub.

Each revocation is cached under ``{prefix}:rev:{kind}:{value}`` until it expires, so a
process that (re)connects rebuilds its view from Redis instead of reading the whole
store, and is published on ``{prefix}:revocations`` so every subscriber learns of it at
once. Key-ring changes are published on ``{prefix}:keyring``.

Times: TTLs are computed from this process's clock (``time.time()``), the clock that
set ``expires_at``, and given to Redis as relative durations, so a skewed Redis clock
cannot drop an entry early.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript
from redis.exceptions import TimeoutError as RedisTimeoutError

from authority.domain.backoff import RECONNECT
from authority.domain.errors import Unavailable
from authority.domain.revocation import Revocation, RevocationKind
from authority.ports.fanout import OnEvent, OnRevocation
from authority.redis import REDIS_FAILURES, make_client, unavailable

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

log = structlog.get_logger(__name__)

# How long one wait for a message lasts, and how long the subscription may stay silent
# before it is PINGed (a half-open TCP connection never reports an error by itself).
_POLL_SECONDS = 1.0
_PING_AFTER_IDLE = 5.0
# MGET batch size, and the SCAN COUNT hint.
_BATCH = 1000

# Widen, never narrow, the cached entry, then publish: one atomic round trip, so two
# replicas revoking the same subject at once end with the later times, and no subscriber
# can hear of a revocation before the cache holds it.
#   KEYS[1] the cache key
#   ARGV    issued_before, expires_at, now (seconds), channel, message
#   returns the TTL set in ms, or 0 if the (widened) entry has already expired
_REVOKE = """
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
local issued_before = tonumber(ARGV[1])
local expires_at = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
if current then
  local ok, entry = pcall(cjson.decode, current)
  if ok and type(entry) == 'table' then
    local ib, ea = tonumber(entry.issued_before), tonumber(entry.expires_at)
    if finite(ib) and ib > issued_before then issued_before = ib end
    if finite(ea) and ea > expires_at then expires_at = ea end
  end
end
local ttl = math.ceil((expires_at - now) * 1000)
if ttl > 0 then
  -- Ten years: a bound that keeps PX an integer Redis accepts.
  ttl = math.min(ttl, 315360000000)
  local value = string.format(
    '{"issued_before":%.17g,"expires_at":%.17g}', issued_before, expires_at)
  redis.call('SET', KEYS[1], value, 'PX', ttl)
else
  ttl = 0
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return ttl
"""


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters, so a prefix matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _parse_times(data: Any) -> tuple[float, float]:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return _number(data["issued_before"]), _number(data["expires_at"])


def parse_revocation_message(raw: bytes) -> Revocation:
    """A revocation from a fan-out message; ValueError (or KeyError) if malformed."""
    data = json.loads(raw)
    issued_before, expires_at = _parse_times(data)
    value = data["value"]
    if not isinstance(value, str) or not value:
        raise ValueError("the value is not a non-empty string")
    return Revocation(RevocationKind(data["kind"]), value, issued_before, expires_at)


class RedisFanout:
    """``Fanout`` over one Redis (see the module docstring for the keys and channels).

    ``healthy`` is True from ``start`` until something fails (``start`` does no I/O);
    False while a ``listen`` loop is not subscribed, and after a command failed until one
    succeeds (a resubscription counts too: it proves Redis is back).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "authority",
        socket_timeout: float = 2.0,
        tracing: Tracing | None = None,
    ) -> None:
        self._url = url
        self._tracing = tracing  # the commands only; the listener has no request
        self._prefix = prefix
        self._socket_timeout = socket_timeout
        self._revocations_channel = f"{prefix}:revocations"
        self._key_ring_channel = f"{prefix}:keyring"
        self._client: Redis | None = None
        self._closed = False
        self._command_failed = False
        # One token per running ``listen`` that is not subscribed right now.
        self._disconnected: set[object] = set()
        self._revoke: AsyncScript | None = None
        # Futures of ``dropped`` callers, resolved whenever health may have been lost.
        self._watchers: set[asyncio.Future[None]] = set()

    @property
    def healthy(self) -> bool:
        return self._client is not None and not self._command_failed and not self._disconnected

    async def dropped(self) -> None:
        """Return once ``healthy`` is False; woken by every change that can make it so."""
        while self.healthy:
            waiter = asyncio.get_running_loop().create_future()
            self._watchers.add(waiter)
            try:
                await waiter
            finally:
                self._watchers.discard(waiter)

    def _maybe_dropped(self) -> None:
        """Wake the ``dropped`` callers (they check ``healthy`` again themselves)."""
        for waiter in self._watchers:
            if not waiter.done():
                waiter.set_result(None)

    async def start(self) -> None:
        """Create the client; no I/O, so an unreachable Redis does not stop the process."""
        if self._client is None:
            self._client = make_client(self._url, self._socket_timeout, self._tracing)
            self._revoke = self._client.register_script(_REVOKE)
            self._closed = False

    async def close(self) -> None:
        """Close our client. A running ``listen`` is the caller's task: it is not cancelled, it
        notices and returns within a poll interval (or a backoff delay)."""
        self._closed = True
        client, self._client = self._client, None
        self._maybe_dropped()
        if client is not None:
            await client.aclose()

    def cache_key(self, kind: RevocationKind, value: str) -> str:
        return f"{self._prefix}:rev:{kind.value}:{value}"

    async def publish_revocation(self, revocation: Revocation) -> None:
        if not (math.isfinite(revocation.issued_before) and math.isfinite(revocation.expires_at)):
            raise ValueError("revocation times must be finite")
        message = json.dumps(
            {
                "kind": revocation.kind.value,
                "value": revocation.value,
                "issued_before": revocation.issued_before,
                "expires_at": revocation.expires_at,
            }
        )
        self._require_started()
        assert self._revoke is not None  # registered by start()
        try:
            await self._revoke(
                keys=[self.cache_key(revocation.kind, revocation.value)],
                args=[
                    revocation.issued_before,
                    revocation.expires_at,
                    time.time(),
                    self._revocations_channel,
                    message,
                ],
            )
        except REDIS_FAILURES as exc:
            raise self._failed(exc) from exc
        self._command_failed = False

    async def publish_key_ring_changed(self) -> None:
        client = self._require_started()
        try:
            await client.publish(self._key_ring_channel, b"changed")
        except REDIS_FAILURES as exc:
            raise self._failed(exc) from exc
        self._command_failed = False

    async def live_revocations(self) -> list[Revocation]:
        """SCAN the cache and MGET each page: memory is bounded by the result, not by
        Redis's keyspace, and Redis is never blocked the way KEYS would block it."""
        client = self._require_started()
        key_prefix = f"{self._prefix}:rev:".encode()
        pattern = _glob_escape(f"{self._prefix}:rev:") + "*"
        found: dict[tuple[RevocationKind, str], Revocation] = {}
        now = time.time()
        cursor = 0
        try:
            while True:
                cursor, keys = await client.scan(cursor=cursor, match=pattern, count=_BATCH)
                for start in range(0, len(keys), _BATCH):
                    batch = keys[start : start + _BATCH]
                    values = await client.mget(batch)
                    for key, raw in zip(batch, values, strict=True):
                        revocation = self._cached(key, raw, key_prefix)
                        if revocation is None or revocation.expires_at <= now:
                            continue
                        # SCAN may return a key twice: keep the widest.
                        seen = found.get((revocation.kind, revocation.value))
                        if seen is not None:
                            revocation = Revocation(
                                revocation.kind,
                                revocation.value,
                                max(seen.issued_before, revocation.issued_before),
                                max(seen.expires_at, revocation.expires_at),
                            )
                        found[(revocation.kind, revocation.value)] = revocation
                if cursor == 0:
                    break
        except REDIS_FAILURES as exc:
            raise self._failed(exc) from exc
        self._command_failed = False
        return list(found.values())

    async def listen(
        self,
        *,
        on_revocation: OnRevocation,
        on_key_ring_changed: OnEvent,
        on_connected: OnEvent,
    ) -> None:
        """Subscribe, wait for Redis to confirm, run ``on_connected``, then deliver; on any
        failure (including ``on_connected`` raising) start over after a backoff. Returns
        when the fan-out is closed; otherwise runs until cancelled."""
        token = object()
        self._disconnected.add(token)
        client = make_client(self._url, self._socket_timeout)
        failures = 0
        try:
            while not self._closed:
                pubsub = client.pubsub()
                try:
                    early = await self._subscribe(pubsub)
                    await on_connected()
                    self._disconnected.discard(token)
                    self._command_failed = False
                    failures = 0
                    log.info("fanout.subscribed")
                    for message in early:
                        await self._deliver(message, on_revocation, on_key_ring_changed)
                    await self._pump(pubsub, on_revocation, on_key_ring_changed)
                except REDIS_FAILURES as exc:
                    log.warning("fanout.disconnected", error=type(exc).__name__)
                except Exception:
                    log.exception("fanout.resync_failed")
                finally:
                    self._disconnected.add(token)
                    self._maybe_dropped()
                    await self._quietly_close(pubsub)
                if self._closed:
                    break
                failures += 1
                # Jittered: replicas that lost Redis together do not all come back at once.
                await asyncio.sleep(RECONNECT.delay(failures))
        finally:
            self._disconnected.discard(token)
            await client.aclose()

    async def _subscribe(self, pubsub: PubSub) -> list[dict[str, Any]]:
        """Subscribe to both channels and wait for both confirmations, so that everything
        published after ``on_connected`` starts reading is delivered. Returns messages
        that arrived in between (on the first channel, before the second's confirmation)."""
        await pubsub.subscribe(self._revocations_channel, self._key_ring_channel)
        deadline = asyncio.get_running_loop().time() + self._socket_timeout
        confirmed = 0
        early: list[dict[str, Any]] = []
        while confirmed < 2:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise RedisTimeoutError("no subscription confirmation")
            message = await pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            if message["type"] == "subscribe":
                confirmed += 1
            elif message["type"] == "message":
                early.append(message)
        return early

    async def _pump(
        self, pubsub: PubSub, on_revocation: OnRevocation, on_key_ring_changed: OnEvent
    ) -> None:
        """Deliver messages until the connection fails or the fan-out is closed."""
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        pinged_at: float | None = None
        while not self._closed:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True,
                timeout=min(_POLL_SECONDS, self._socket_timeout),
            )
            now = loop.time()
            if message is None:
                if pinged_at is not None and now - pinged_at > self._socket_timeout:
                    raise RedisTimeoutError("no reply to PING on the subscription")
                if pinged_at is None and now - last_heard >= _PING_AFTER_IDLE:
                    await pubsub.ping()
                    pinged_at = now
                continue
            last_heard = now
            pinged_at = None
            await self._deliver(message, on_revocation, on_key_ring_changed)

    async def _deliver(
        self,
        message: dict[str, Any],
        on_revocation: OnRevocation,
        on_key_ring_changed: OnEvent,
    ) -> None:
        """Hand one message to the caller. Malformed messages and failing callbacks are
        logged and skipped: one bad message must not stop the fan-out."""
        if message.get("type") != "message":
            return  # a PING reply
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", errors="replace")
        try:
            if channel == self._revocations_channel:
                data = message.get("data")
                if not isinstance(data, bytes):
                    raise ValueError("the payload is not bytes")
                try:
                    revocation = parse_revocation_message(data)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "fanout.malformed_message",
                        channel=channel,
                        error=type(exc).__name__,
                        size=len(data),
                    )
                    return
                on_revocation(revocation)
            elif channel == self._key_ring_channel:
                await on_key_ring_changed()
        except Exception:
            log.exception("fanout.callback_failed", channel=channel)

    def _cached(self, key: bytes, raw: bytes | None, key_prefix: bytes) -> Revocation | None:
        """A cached entry as a revocation; None if it vanished or is malformed."""
        if raw is None:
            return None  # expired between SCAN and MGET
        try:
            kind, value = key[len(key_prefix) :].decode("utf-8").split(":", 1)
            if not value:
                raise ValueError("empty value")
            issued_before, expires_at = _parse_times(json.loads(raw))
            return Revocation(RevocationKind(kind), value, issued_before, expires_at)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("fanout.malformed_cache_entry", error=type(exc).__name__)
            return None

    def _require_started(self) -> Redis:
        if self._client is None:
            raise Unavailable("Redis is unavailable: the fan-out is not started")
        return self._client

    def _failed(self, exc: BaseException) -> Unavailable:
        self._command_failed = True
        self._maybe_dropped()
        log.warning("fanout.redis_failed", error=type(exc).__name__)
        return unavailable(exc)

    @staticmethod
    async def _quietly_close(pubsub: PubSub) -> None:
        with contextlib.suppress(*REDIS_FAILURES):
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
