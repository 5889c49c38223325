"""The outbox relay: moves committed events from the store's outbox to a sink, and runs
the consumers that read them back.

Why an outbox: a change and its event commit in one transaction, so consumers (the
audit log, webhooks) never see an event for a change that rolled back, and never miss
one for a change that committed, whatever crashes in between. The relay then delivers
at least once: it marks events published only after the sink accepted them, so a crash
between the two re-sends them, and every consumer deduplicates on the event id.

Order: one relay task per process claims batches in outbox-sequence order under a
lease, and the sink keeps batch order. A consumer handles the events of a batch in that
order. With several processes the leases split the backlog into disjoint batches that
may be delivered concurrently, so across processes the order is by ``sequence``, which
every event carries; the audit log is kept in that order.

Sinks:

- ``LocalEventSink`` (the embedded default): an asyncio queue per in-process consumer.
  ``publish`` returns once every consumer has handled the batch, so "accepted" means
  "consumed" and nothing is lost if the process dies with events still queued.
- ``authority.redis.events.RedisStreamSink`` (production): a Redis stream, read by
  consumer groups so replicas share the work.

Lag (event committed, approximated by ``occurred_at``, to consumed) is recorded in
``OutboxRelay.lag``, a ``Histogram`` the metrics endpoint can export.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import structlog

from authority.domain.audit import record_from_event
from authority.domain.clock import Clock
from authority.domain.errors import Unavailable
from authority.domain.events import OutboxEntry
from authority.domain.histogram import Histogram
from authority.lifecycle import wait_event
from authority.store.base import AuditStore, OutboxStore

log = structlog.get_logger(__name__)

Handler = Callable[[Sequence[OutboxEntry]], Awaitable[None]]
"""Handles a batch of events, in order. Raising means "not handled": it comes back."""

AUDIT_GROUP = "audit"


class EventSink(Protocol):
    async def start(self) -> None:
        """Prepare (no I/O that can fail for good: an unreachable bus is retried)."""
        ...

    async def close(self) -> None:
        """Idempotent."""
        ...

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Accept a batch, in order, all or nothing. Raises Unavailable if not accepted."""
        ...

    async def consume(self, group: str, handler: Handler) -> None:
        """Deliver events to ``handler`` until cancelled. ``group`` names the consumer (one
        per purpose: the audit log, webhooks); processes sharing a group share its work."""
        ...


# -- the embedded sink ---------------------------------------------------------------


@dataclass
class _Delivery:
    entries: Sequence[OutboxEntry]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LocalEventSink:
    """In-process queues, one per consumer group; see the module docstring."""

    def __init__(self, *, groups: Sequence[str] = (AUDIT_GROUP,), timeout: float = 10.0) -> None:
        """``groups`` are registered up front, so a batch published before a consumer's
        task first runs waits for it instead of being delivered to no one."""
        self._queues: dict[str, asyncio.Queue[_Delivery]] = {}
        for group in groups:
            self._queue(group)
        self._timeout = timeout

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _queue(self, group: str) -> asyncio.Queue[_Delivery]:
        return self._queues.setdefault(group, asyncio.Queue(maxsize=16))

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Accepted once every registered consumer has handled the batch: a consumer that
        fails or stalls makes it Unavailable, and the relay sends the batch again later."""
        deliveries = []
        for queue in list(self._queues.values()):
            delivery = _Delivery(entries)
            await queue.put(delivery)
            deliveries.append(delivery)
        if not deliveries:
            return
        try:
            # asyncio.timeout, not wait_for: a stop's cancellation that arrives as the last
            # consumer finishes must not be swallowed (Python 3.11, see lifecycle).
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*(d.done for d in deliveries))
        except Exception as exc:
            raise Unavailable(f"an in-process consumer did not handle the events: {exc!r}") from exc

    async def consume(self, group: str, handler: Handler) -> None:
        queue = self._queue(group)
        while True:
            delivery = await queue.get()
            try:
                await handler(delivery.entries)
            except Exception as exc:
                if not delivery.done.done():
                    delivery.done.set_exception(exc)
            else:
                if not delivery.done.done():
                    delivery.done.set_result(None)
            finally:
                queue.task_done()


# -- the relay -----------------------------------------------------------------------


class OutboxRelay:
    """Claims unpublished events in sequence order, publishes them, marks them published."""

    def __init__(
        self,
        *,
        store: OutboxStore,
        sink: EventSink,
        clock: Clock,
        batch_size: int = 100,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(milliseconds=50),
        max_poll_interval: timedelta = timedelta(milliseconds=250),
        retention: timedelta = timedelta(days=7),
        prune_interval: timedelta = timedelta(hours=1),
        depth_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        """Published events are kept for ``retention`` (to inspect or re-drive a sink),
        then pruned every ``prune_interval``; the audit log keeps its own copy. The
        backlog (``depth``, a gauge) is counted at most every ``depth_interval``: under
        load a round comes every few milliseconds, and a COUNT after each was one more
        statement per round for a number scraped every few seconds."""
        self._store = store
        self._sink = sink
        self._clock = clock
        self._batch_size = batch_size
        self._lease = lease
        self._poll = poll_interval.total_seconds()
        self._max_poll = max(self._poll, max_poll_interval.total_seconds())
        self._wake = asyncio.Event()
        self._retention = retention
        self._prune_interval = prune_interval.total_seconds()
        self._pruned_at = 0.0
        self._depth_interval = depth_interval.total_seconds()
        self._counted_at: float | None = None
        # Committed -> consumed, per event and consumer group (seconds).
        self.lag = Histogram()
        # Committed -> accepted by the sink.
        self.publish_lag = Histogram()
        self.published = 0
        self.consumed = 0
        self.depth = 0
        self.on_depth: Callable[[int], None] = lambda depth: None  # metrics hook
        self.failures = 0
        # Each round's outcome (True: it succeeded), for readiness (WriteHealth).
        self.on_outcome: Callable[[bool], None] = lambda ok: None

    @property
    def sink(self) -> EventSink:
        return self._sink

    def wake(self) -> None:
        """Look for new events now rather than at the next poll (after a commit)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """One batch: claim, publish, mark. Returns how many events were published."""
        entries = await self._store.claim_unpublished(
            self._batch_size, now=self._clock.now(), lease=self._lease
        )
        if not entries:
            return 0
        await self._sink.publish(entries)
        now = self._clock.now()
        await self._store.mark_published([e.event.id for e in entries], at=now)
        for entry in entries:
            self.publish_lag.observe(max(0.0, (now - entry.event.occurred_at).total_seconds()))
        self.published += len(entries)
        return len(entries)

    async def run(self) -> None:
        """Relay until cancelled: straight on while there is a backlog, else poll, backing
        off to ``max_poll_interval`` while idle. Failures are logged and retried (the
        events stay in the outbox; their lease lapses and they are claimed again)."""
        delay = self._poll
        while True:
            try:
                await self._prune_when_due()
                count = await self.relay_once()
                await self._count_when_due()
                self.failures = 0
                self.on_outcome(True)
            except Exception:
                self.failures += 1
                count = 0
                log.warning(
                    "outbox.relay_failed", consecutive_failures=self.failures, exc_info=True
                )
                self.on_outcome(False)
            if count >= self._batch_size:
                delay = self._poll
                continue
            delay = self._poll if count else min(delay * 2, self._max_poll)
            self._wake.clear()
            # Not wait_for: on 3.11 it can swallow the stop's cancellation (see lifecycle).
            if await wait_event(self._wake, delay):
                delay = self._poll

    async def _count_when_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._counted_at is not None and now - self._counted_at < self._depth_interval:
            return
        self._counted_at = now
        self.depth = await self._store.outbox_depth()
        self.on_depth(self.depth)

    async def _prune_when_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at < self._prune_interval:
            return
        self._pruned_at = now
        pruned = await self._store.prune_outbox(self._clock.now() - self._retention)
        if pruned:
            log.info("outbox.pruned", events=pruned)

    def observed(self, handler: Handler) -> Handler:
        """``handler``, recording each event's lag once handled."""

        async def handle(entries: Sequence[OutboxEntry]) -> None:
            await handler(entries)
            now = self._clock.now()
            for entry in entries:
                self.lag.observe(max(0.0, (now - entry.event.occurred_at).total_seconds()))
            self.consumed += len(entries)

        return handle

    async def consume(self, group: str, handler: Handler) -> None:
        """Run a consumer of ``group`` until cancelled (its lag recorded in ``lag``)."""
        await self._sink.consume(group, self.observed(handler))


class AuditConsumer:
    """Appends every event to the audit log; idempotent on the event id, so redelivery
    (at least once) never records an event twice."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self.recorded = 0

    async def __call__(self, entries: Sequence[OutboxEntry]) -> None:
        self.recorded += await self._store.append_audit([record_from_event(e) for e in entries])
