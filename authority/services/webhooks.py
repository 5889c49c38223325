"""Webhooks: signed HTTP POSTs of outbox events to subscribed endpoints.

The dispatcher is an outbox consumer (group ``webhooks``). For each event it reads the
subscriptions (from the store, so every replica sees the same ones at once) and puts
the delivery on the queue of each endpoint that wants the event type. Every endpoint
has its own queue and task: a slow or failing endpoint only ever delays itself.

A delivery is retried with exponential backoff and jitter; after ``max_attempts`` it
goes to the dead-letter store, where an operator can list it and replay it (admin
RPCs). The body is the event's JSON (``entry_to_json``: no secrets), signed with the
subscription's secret (see ``authority.domain.webhooks`` for the scheme). The secret is
shown once at creation and stored only wrapped under the KEK.

Delivery is at least once from the outbox to the endpoint queues; a process that stops
with deliveries still queued or waiting for a retry loses those (they are neither
delivered nor dead-lettered), which is why receivers should also reconcile through
``ListAuditEvents``. Receivers deduplicate on ``X-Authority-Event-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import structlog

from authority.crypto import KekRing
from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument, NotFound
from authority.domain.events import Event, OutboxEntry, entry_to_json, new_event
from authority.domain.webhook_targets import PUBLIC_ONLY, AllowList
from authority.domain.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeadLetter,
    Webhook,
    backoff,
    sign,
    validate_event_types,
    validate_url,
)
from authority.services.webhook_resolver import (
    DestinationRefused,
    GuardedResolver,
    check_destination,
    check_literal,
)
from authority.store.base import WebhookStore

log = structlog.get_logger(__name__)

WEBHOOK_GROUP = "webhooks"
WEBHOOK = "webhook"
_SECRET_PREFIX = "whsec_"
# What last_error and dead letters say: coarse on purpose. An admin must not be able to
# use the delivery errors as a port scanner (open, closed and filtered ports, refused,
# reset and timed-out connections all read the same).
CONNECTION_FAILED = "connection failed"
DESTINATION_REFUSED = "destination not allowed"


def webhook_secret_aad(webhook_id: str) -> bytes:
    """Binds a wrapped secret to its webhook, so secrets cannot be swapped between rows."""
    return b"authority-webhook-secret:" + webhook_id.encode()


def new_webhook_secret() -> str:
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _Delivery:
    event_id: str
    body: bytes


class WebhookDispatcher:
    """Subscriptions, the per-endpoint delivery tasks, and the dead letters."""

    def __init__(
        self,
        *,
        store: WebhookStore,
        kek: KekRing,
        clock: Clock,
        max_attempts: int = 6,
        base_delay: timedelta = timedelta(seconds=1),
        max_delay: timedelta = timedelta(minutes=5),
        timeout: timedelta = timedelta(seconds=10),
        queue_size: int = 10_000,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        allowed: AllowList = PUBLIC_ONLY,
    ) -> None:
        """``on_outcome`` hears "delivered", "retried" and "dead_lettered" (for metrics).
        ``allowed``: internal networks and hosts deliveries may go to besides public ones."""
        self._store = store
        self._allowed = allowed
        self._on_outcome = on_outcome
        self._kek = kek
        self._clock = clock
        self._max_attempts = max_attempts
        self._base = base_delay.total_seconds()
        self._cap = max_delay.total_seconds()
        self._timeout = timeout.total_seconds()
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[_Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.dead_lettered = 0

    # -- subscriptions --------------------------------------------------------------

    async def create(self, url: str, event_types: Sequence[str]) -> tuple[Webhook, str]:
        """A new subscription and its signing secret (returned once, never again)."""
        url = validate_url(url)
        types = validate_event_types(event_types)
        await check_destination(url, self._allowed)
        secret = new_webhook_secret()
        webhook_id = "wh_" + secrets.token_hex(8)
        webhook = Webhook(
            id=webhook_id,
            url=url,
            event_types=types,
            wrapped_secret=self._kek.wrap(secret.encode(), aad=webhook_secret_aad(webhook_id)),
            created_at=self._clock.now(),
        )
        event = self._event("webhook.created", webhook_id, url=webhook.url, event_types=list(types))
        await self._store.create_webhook(webhook, events=(event,))
        return webhook, secret

    async def subscriptions(self) -> list[Webhook]:
        return await self._store.list_webhooks()

    async def delete(self, webhook_id: str) -> bool:
        event = self._event("webhook.deleted", webhook_id)
        return await self._store.delete_webhook(webhook_id, events=(event,))

    def _event(self, type_: str, webhook_id: str, **data: object) -> Event:
        return new_event(type_, WEBHOOK, webhook_id, at=self._clock.now(), data=data)

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(self, webhook_id: str = "", limit: int = 100) -> list[DeadLetter]:
        return await self._store.list_dead_letters(webhook_id=webhook_id, limit=limit)

    async def replay(self, letter_id: str) -> DeadLetter:
        """Take a dead letter back onto its endpoint's queue, with a fresh retry budget."""
        letter = await self._store.take_dead_letter(letter_id)
        if letter is None:
            raise NotFound(f"no dead letter with id {letter_id!r}")
        webhooks = {w.id: w for w in await self._store.list_webhooks()}
        webhook = webhooks.get(letter.webhook_id)
        if webhook is None:
            raise NotFound(f"the webhook {letter.webhook_id!r} no longer exists")
        self._enqueue(webhook, _Delivery(letter.event_id, letter.payload))
        return letter

    # -- delivery -------------------------------------------------------------------

    async def __call__(self, entries: Sequence[OutboxEntry]) -> None:
        """The outbox consumer: fan each event out to the queues of its subscribers."""
        webhooks = await self._store.list_webhooks()
        if not webhooks:
            return
        for entry in entries:
            body = entry_to_json(entry)
            for webhook in webhooks:
                if webhook.wants(entry.event.type):
                    self._enqueue(webhook, _Delivery(entry.event.id, body))

    def _enqueue(self, webhook: Webhook, delivery: _Delivery) -> None:
        queue = self._queues.get(webhook.id)
        if queue is None:
            queue = self._queues[webhook.id] = asyncio.Queue(self._queue_size)
        worker = self._workers.get(webhook.id)
        if worker is None or worker.done():
            self._workers[webhook.id] = asyncio.create_task(
                self._work(webhook.id, queue), name=f"webhook-{webhook.id}"
            )
        try:
            queue.put_nowait(delivery)
        except asyncio.QueueFull:
            log.warning("webhook.queue_full", webhook_id=webhook.id, event_id=delivery.event_id)
            asyncio.get_running_loop().create_task(
                self._dead_letter(webhook.id, delivery, 0, "the endpoint's queue was full")
            )

    async def _work(self, webhook_id: str, queue: asyncio.Queue[_Delivery]) -> None:
        """One endpoint's deliveries, one at a time, in order."""
        while True:
            delivery = await queue.get()
            try:
                webhook = await self._current(webhook_id)
                if webhook is None:  # deleted meanwhile: drop what was queued for it
                    continue
                await self._deliver(webhook, delivery)
            except Exception:
                log.exception("webhook.worker_failed", webhook_id=webhook_id)
            finally:
                queue.task_done()

    async def _current(self, webhook_id: str) -> Webhook | None:
        return next((w for w in await self._store.list_webhooks() if w.id == webhook_id), None)

    async def _deliver(self, webhook: Webhook, delivery: _Delivery) -> None:
        secret = self._kek.unwrap(webhook.wrapped_secret, aad=webhook_secret_aad(webhook.id))
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            error = await self._post(webhook, secret, delivery)
            if not error:
                self.delivered += 1
                self._on_outcome("delivered")
                return
            if attempt < self._max_attempts:
                self._on_outcome("retried")
                await asyncio.sleep(backoff(attempt, base=self._base, cap=self._cap))
        await self._dead_letter(webhook.id, delivery, self._max_attempts, error)

    async def _post(self, webhook: Webhook, secret: bytes, delivery: _Delivery) -> str:
        """'' when the endpoint answered 2xx, else what went wrong (no response bodies:
        they are the receiver's and could be large or sensitive)."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, delivery.body),
            EVENT_ID_HEADER: delivery.event_id,
        }
        try:
            check_literal(webhook.url, self._allowed)  # names are checked as they resolve
            async with self._client().post(
                webhook.url, data=delivery.body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except InvalidArgument:
            return DESTINATION_REFUSED
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return DESTINATION_REFUSED if _refused(exc) else CONNECTION_FAILED

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(resolver=GuardedResolver(self._allowed)),
                trust_env=False,  # no proxy from the environment: we connect where we check
            )
        return self._session

    async def _dead_letter(
        self, webhook_id: str, delivery: _Delivery, attempts: int, error: str
    ) -> None:
        letter = DeadLetter(
            id="dl_" + secrets.token_hex(8),
            webhook_id=webhook_id,
            event_id=delivery.event_id,
            payload=delivery.body,
            attempts=attempts,
            last_error=error,
            failed_at=self._clock.now(),
        )
        await self._store.add_dead_letter(letter)
        self.dead_lettered += 1
        self._on_outcome("dead_lettered")
        log.warning("webhook.dead_lettered", webhook_id=webhook_id, event_id=delivery.event_id)

    async def idle(self) -> None:
        """Wait until every queued delivery is done (tests, graceful stop)."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        """Stop every endpoint task and the HTTP client. Idempotent."""
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _refused(error: BaseException) -> bool:
    """Whether the resolver refused the destination (aiohttp wraps its error)."""
    seen: BaseException | None = error
    for _ in range(8):  # a short chain; never follow a cycle
        if seen is None:
            break
        if isinstance(seen, DestinationRefused):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
