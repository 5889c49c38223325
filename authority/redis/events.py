"""The production event sink: one Redis stream, ``{prefix}:events``, read by consumer groups.

``publish`` appends a batch with one ``XADD`` per event inside one script (all or
nothing, in order, as ``MULTI`` would, but one command and one reply where ``MULTI``
costs a ``QUEUED`` reply per event to read), trimming the stream with ``MAXLEN ~`` so it
stays bounded (the outbox, not the stream, is the durable record).

Each consumer purpose is a consumer group, and each process a consumer in it, so
replicas share the work: ``XREADGROUP`` hands out new entries, ``XACK`` confirms them
once handled, and ``XAUTOCLAIM`` takes over entries another consumer read but never
acknowledged (it crashed, or its handler kept failing) once they have been idle for
``claim_idle``. Delivery is therefore at least once; consumers
deduplicate on the event id. A consumer looks for such entries every quarter of
``claim_idle`` (so within 1.25 times it), not before every read: under load a read comes
every few milliseconds, and an ``XAUTOCLAIM`` before each doubled the round trips.
For the same reason a handled batch's ``XACK`` is not a round trip of its own: it is
sent in one pipeline with the consumer's next read, which follows at once (Redis runs
the ``XACK`` before the read blocks). An acknowledgement lost with a failed pipeline
is sent again with the next one (``XACK`` is idempotent), or, if the process dies, the
entries are claimed again: at least once still holds. ``close`` sends what is left.

Every Redis failure becomes ``Unavailable`` with a message that names no host, and the
consuming loop reconnects with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from authority.domain.backoff import RECONNECT
from authority.domain.errors import Unavailable
from authority.domain.events import OutboxEntry, entry_from_json, entry_to_json
from authority.redis import REDIS_FAILURES, make_client, unavailable
from authority.services.outbox import Handler

log = structlog.get_logger(__name__)

_FIELD = b"event"

# KEYS[1]: the stream; ARGV[1]: its approximate maximum length; ARGV[2..]: the events.
_PUBLISH = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
end
return #ARGV - 1
"""


class RedisStreamSink:
    """``EventSink`` over one Redis stream (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "authority",
        max_length: int = 100_000,
        batch_size: int = 100,
        block: float = 1.0,
        claim_idle: float = 30.0,
        socket_timeout: float = 2.0,
        consumer: str | None = None,
    ) -> None:
        self._url = url
        self._socket_timeout = socket_timeout
        self._block_ms = max(1, round(block * 1000))
        self.stream = f"{prefix}:events"
        self._max_length = max_length
        self._batch_size = batch_size
        self._claim_idle_ms = max(1, round(claim_idle * 1000))
        self._claim_every = claim_idle / 4
        self._claim_due: dict[str, float] = {}  # per group, on the monotonic clock
        self._acks: dict[str, list[Any]] = {}  # per group: handled, to acknowledge next
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._client: Redis | None = None
        self._publish: AsyncScript | None = None

    async def start(self) -> None:
        """No I/O: the first command connects."""
        if self._client is None:
            # Blocking reads wait up to ``block``; the socket must outwait them.
            timeout = self._socket_timeout + self._block_ms / 1000
            self._client = make_client(self._url, timeout)
            self._publish = self._client.register_script(_PUBLISH)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._publish = None
        acks, self._acks = self._acks, {}
        if client is not None:
            try:
                for group, ids in acks.items():
                    if ids:  # else claimed again once stale: at least once either way
                        await client.xack(self.stream, group, *ids)
            except REDIS_FAILURES:
                log.warning("events.final_ack_failed", exc_info=True)
            finally:
                await client.aclose()

    def _redis(self) -> Redis:
        if self._client is None:
            raise Unavailable("the event stream is not started")
        return self._client

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        self._redis()  # Unavailable unless started
        assert self._publish is not None  # registered by start()
        try:
            await self._publish(
                keys=[self.stream],
                args=[self._max_length, *(entry_to_json(entry) for entry in entries)],
            )
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc

    async def ensure_group(self, group: str) -> None:
        """Create the group at the start of the stream (so nothing already there is
        skipped); an existing group is left as it is."""
        try:
            await self._redis().xgroup_create(self.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise unavailable(exc) from exc
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc

    async def consume(self, group: str, handler: Handler) -> None:
        """Handle entries until cancelled, reconnecting with backoff after failures."""
        failures = 0
        while True:
            try:
                await self.ensure_group(group)
                while True:
                    if await self.consume_once(group, handler):
                        failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("events.consume_failed", group=group, exc_info=True)
                failures += 1
                await asyncio.sleep(RECONNECT.delay(failures))

    async def consume_once(self, group: str, handler: Handler) -> int:
        """Take over stale pending entries, else read new ones (blocking up to ``block``);
        hand them to ``handler`` and acknowledge them (with the next read). Returns how
        many were handled. A handler failure leaves them pending, to be claimed again
        after ``claim_idle``."""
        try:
            messages: list[Any] = []
            now = time.monotonic()
            if now >= self._claim_due.get(group, 0.0):
                claimed = await self._acked_then(group, self._claim_args(group))
                messages = list(claimed[1]) if claimed else []
                # A full batch may leave more behind: look again on the next call.
                full = len(messages) >= self._batch_size
                self._claim_due[group] = now if full else now + self._claim_every
            if not messages:
                reply = await self._acked_then(group, self._read_args(group))
                messages = [m for _, stream_messages in reply or () for m in stream_messages]
        except REDIS_FAILURES as exc:
            raise unavailable(exc) from exc
        if not messages:
            return 0
        entries, ids = [], []
        for message_id, fields in messages:
            ids.append(message_id)
            if not fields:  # trimmed away (MAXLEN) while pending: nothing left to handle
                continue
            try:
                entries.append(entry_from_json(fields[_FIELD]))
            except (KeyError, TypeError, ValueError):
                log.warning("events.malformed_entry", group=group, id=str(message_id))
        entries.sort(key=lambda e: e.sequence)
        if entries:
            await handler(entries)
        self._acks[group] = ids  # handled: acknowledged with the next command
        return len(entries)

    def _claim_args(self, group: str) -> tuple[str, dict[str, Any]]:
        return "xautoclaim", {
            "name": self.stream,
            "groupname": group,
            "consumername": self.consumer,
            "min_idle_time": self._claim_idle_ms,
            "start_id": "0-0",
            "count": self._batch_size,
        }

    def _read_args(self, group: str) -> tuple[str, dict[str, Any]]:
        return "xreadgroup", {
            "groupname": group,
            "consumername": self.consumer,
            "streams": {self.stream: ">"},
            "count": self._batch_size,
            "block": self._block_ms,
        }

    async def _acked_then(self, group: str, command: tuple[str, dict[str, Any]]) -> Any:
        """``command``'s reply, sent after an ``XACK`` of what ``group`` handled last,
        in one pipeline (one round trip); alone when nothing waits to be acknowledged."""
        name, kwargs = command
        redis = self._redis()
        acks = self._acks.get(group)
        if not acks:
            return await getattr(redis, name)(**kwargs)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, group, *acks)
            getattr(pipe, name)(**kwargs)
            replies = await pipe.execute()
        if self._acks.get(group) is acks:
            del self._acks[group]
        return replies[-1]
