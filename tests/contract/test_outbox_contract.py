"""The Store contract for the transactional outbox and the audit log, on every backend.

An event is in the outbox exactly when its change committed; relays claim unpublished
events in sequence order under a lease, so several relays never hand out the same
event at once; the audit log records each event once, however often it is delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from authority.domain.audit import AuditQuery, record_from_event
from authority.domain.clients import Client, GrantType
from authority.domain.errors import AlreadyExists
from authority.domain.events import (
    KEY,
    PRINCIPAL,
    Event,
    RequestContext,
    bind_request,
    new_event,
)
from authority.domain.keys import Algorithm, KeyRecord
from authority.domain.principals import Principal
from authority.domain.revocation import Revocation, RevocationKind
from authority.domain.sessions import RefreshRecord, Session
from authority.domain.webhooks import DeadLetter, Webhook
from authority.store.base import Store

OpenStore = Callable[[], Awaitable[Store]]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=30)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def principal(name: str = "alice", principal_id: str = "p-1") -> Principal:
    return Principal(id=principal_id, name=name, password_hash=HASH, disabled=False, created_at=T0)


def client(client_id: str = "mobile") -> Client:
    return Client(
        id=client_id,
        secret_hash=hashlib.sha256(b"s").digest(),
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        audiences=("api",),
        scopes=frozenset({"read"}),
        default_scopes=("read",),
        access_token_ttl=timedelta(minutes=5),
        session_idle_ttl=timedelta(days=1),
        session_absolute_ttl=timedelta(days=30),
        disabled=False,
        created_at=T0,
    )


def key(kid: str) -> KeyRecord:
    return KeyRecord(
        kid=kid,
        algorithm=Algorithm.ES256,
        public_jwk={"kty": "EC", "kid": kid},
        wrapped_private_key=b"wrapped",
        kek_id="kek-1",
        published_at=T0,
        activates_at=T0,
    )


def event(type_: str = "principal.created", aggregate_id: str = "p-1", **data: object) -> Event:
    return new_event(type_, PRINCIPAL, aggregate_id, at=T0, data=data)


async def types(store: Store) -> list[str]:
    return [e.event.type for e in await store.read_outbox()]


async def test_events_round_trip_with_their_context(store: Store) -> None:
    bind_request(RequestContext(actor="admin", source_address="10.0.0.7", request_id="rq-1"))
    written = event(name="alice", count=2, nested={"a": [1, "b"]})
    await store.create_principal(principal(), events=(written,))
    [entry] = await store.read_outbox()
    assert entry.sequence > 0
    assert entry.event.id == written.id
    assert entry.event.actor == "admin"
    assert entry.event.source_address == "10.0.0.7"
    assert entry.event.request_id == "rq-1"
    assert entry.event.occurred_at == T0
    assert dict(entry.event.data) == {"name": "alice", "count": 2, "nested": {"a": [1, "b"]}}


async def test_each_writing_method_commits_its_events(store: Store) -> None:
    await store.create_principal(principal(), events=(event("principal.created"),))
    await store.update_principal("p-1", disabled=True, events=(event("principal.disabled"),))
    await store.create_client(client(), events=(event("client.created", "mobile"),))
    await store.update_client("mobile", disabled=True, events=(event("client.disabled", "mobile"),))
    session = Session(
        id="s-1",
        subject="p-1",
        client_id="mobile",
        audience=("api",),
        scope=("read",),
        created_at=T0,
        idle_ttl=timedelta(days=1),
        absolute_expires_at=T0 + timedelta(days=30),
    )
    first = RefreshRecord(b"h" * 32, "s-1", T0, T0 + timedelta(days=1))
    await store.create_session(session, first, events=(event("session.started", "s-1"),))
    successor = RefreshRecord(b"n" * 32, "s-1", T0, T0 + timedelta(days=1))
    assert await store.consume_refresh(
        b"h" * 32,
        consumed_at=T0,
        successor=successor,
        sealed=b"sealed",
        events=(event("session.refreshed", "s-1"),),
    )
    revocation = Revocation(RevocationKind.SESSION, "s-1", T0.timestamp(), T0.timestamp() + 60)
    await store.record_revocation(revocation, at=T0, events=(event("revocation.session", "s-1"),))
    await store.append_events((event("login.failed"),))
    async with store.key_ring_transaction() as tx:
        await tx.insert_key(key("k-1"))
        await tx.add_event(new_event("key.created", KEY, "k-1", at=T0))
    await store.delete_client("mobile", events=(event("client.deleted", "mobile"),))
    await store.delete_principal("p-1", events=(event("principal.deleted"),))

    assert await types(store) == [
        "principal.created",
        "principal.disabled",
        "client.created",
        "client.disabled",
        "session.started",
        "session.refreshed",
        "revocation.session",
        "login.failed",
        "key.created",
        "client.deleted",
        "principal.deleted",
    ]
    sequences = [e.sequence for e in await store.read_outbox()]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


async def test_a_rolled_back_key_ring_transaction_publishes_nothing(store: Store) -> None:
    async def create_then_fail() -> None:
        async with store.key_ring_transaction() as tx:
            await tx.insert_key(key("k-1"))
            await tx.add_event(new_event("key.created", KEY, "k-1", at=T0))
            raise RuntimeError("the decision failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await create_then_fail()
    assert await store.read_outbox() == []
    assert await store.claim_unpublished(10, now=T0, lease=LEASE) == []
    assert await store.list_keys() == []


async def test_a_refused_change_writes_no_event(store: Store) -> None:
    await store.create_principal(principal())
    with pytest.raises(AlreadyExists):
        await store.create_principal(principal(principal_id="p-2"), events=(event(),))
    # No change, no event: unknown targets and a lost refresh race.
    assert await store.update_principal("nobody", disabled=True, events=(event(),)) is None
    assert not await store.delete_client("nobody", events=(event(),))
    assert not await store.consume_refresh(
        b"x" * 32,
        consumed_at=T0,
        successor=RefreshRecord(b"y" * 32, "s-0", T0, T0),
        sealed=b"",
        events=(event("session.refreshed"),),
    )
    assert await store.read_outbox() == []


async def test_a_duplicate_event_id_rolls_back_the_change(store: Store) -> None:
    written = event()
    await store.append_events((written,))
    with pytest.raises(AlreadyExists):
        await store.create_principal(principal(), events=(written,))
    assert await store.get_principal("p-1") is None


async def test_claims_are_in_sequence_order_and_leased(store: Store) -> None:
    await store.append_events([event(aggregate_id=f"p-{i}") for i in range(5)])
    first = await store.claim_unpublished(3, now=T0, lease=LEASE)
    assert [e.event.aggregate_id for e in first] == ["p-0", "p-1", "p-2"]
    # Leased: the next claim skips them.
    second = await store.claim_unpublished(10, now=T0, lease=LEASE)
    assert [e.event.aggregate_id for e in second] == ["p-3", "p-4"]
    assert await store.claim_unpublished(10, now=T0 + timedelta(seconds=1), lease=LEASE) == []
    # Published ones never come back; unpublished ones do once the lease lapses.
    await store.mark_published([e.event.id for e in first], at=T0)
    later = await store.claim_unpublished(10, now=T0 + LEASE, lease=LEASE)
    assert [e.event.aggregate_id for e in later] == ["p-3", "p-4"]
    published = await store.outbox_published([e.event.id for e in first + later])
    assert published == {e.event.id for e in first}
    await store.mark_published(["unknown-id"], at=T0)  # ignored


async def test_concurrent_relays_never_claim_the_same_event(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(3)]
    await stores[0].append_events([event(aggregate_id=f"p-{i}") for i in range(60)])

    async def relay(store: Store) -> list[str]:
        claimed: list[str] = []
        while batch := await store.claim_unpublished(4, now=T0, lease=LEASE):
            claimed += [e.event.id for e in batch]
            await store.mark_published([e.event.id for e in batch], at=T0)
        return claimed

    results = await asyncio.gather(*(relay(s) for s in stores for _ in range(2)))
    everything = [event_id for claimed in results for event_id in claimed]
    assert len(everything) == 60
    assert len(set(everything)) == 60


async def test_events_survive_a_restart(open_store: OpenStore) -> None:
    store = await open_store()
    await store.append_events((event(),))
    await store.close()
    reopened = await open_store()
    assert await types(reopened) == ["principal.created"]


async def test_a_batch_with_one_event_twice_records_it_once(store: Store) -> None:
    await store.append_events([new_event("principal.created", PRINCIPAL, "p-1", at=T0)])
    [record] = [record_from_event(e) for e in await store.read_outbox()]
    assert await store.append_audit([record, record]) == 1
    assert [r.event_id for r in await store.list_audit(AuditQuery())] == [record.event_id]


async def test_the_audit_log_records_each_event_once_and_filters(store: Store) -> None:
    await store.append_events(
        [
            new_event("principal.created", PRINCIPAL, "p-1", at=T0),
            new_event("login.failed", PRINCIPAL, "p-1", at=T0 + timedelta(minutes=1)),
            new_event("principal.created", PRINCIPAL, "p-2", at=T0 + timedelta(minutes=2)),
        ]
    )
    records = [record_from_event(e) for e in await store.read_outbox()]
    assert await store.append_audit(records) == 3
    assert await store.append_audit(records) == 0  # redelivered: recorded once
    assert await store.append_audit([records[0], records[0]]) == 0  # twice in one batch
    assert await store.append_audit([]) == 0
    everything = await store.list_audit(AuditQuery())
    assert [r.event_id for r in everything] == [r.event_id for r in records]
    assert everything[1].result == "failure"
    assert everything[0].occurred_at == T0

    by_target = await store.list_audit(AuditQuery(target_id="p-1"))
    assert [r.action for r in by_target] == ["principal.created", "login.failed"]
    by_action = await store.list_audit(AuditQuery(action="principal.created"))
    assert [r.target_id for r in by_action] == ["p-1", "p-2"]
    window = await store.list_audit(
        AuditQuery(since=T0 + timedelta(seconds=30), until=T0 + timedelta(minutes=2))
    )
    assert [r.action for r in window] == ["login.failed"]
    page = await store.list_audit(AuditQuery(limit=2))
    rest = await store.list_audit(AuditQuery(after_sequence=page[-1].event_sequence, limit=2))
    assert [r.event_id for r in page + rest] == [r.event_id for r in records]


async def test_webhooks_and_dead_letters(store: Store) -> None:
    hook = Webhook("wh-1", "https://example.test/hook", ("login.failed",), b"wrapped", T0)
    await store.create_webhook(hook, events=(event("webhook.created", "wh-1"),))
    with pytest.raises(AlreadyExists):
        await store.create_webhook(hook)
    other = Webhook("wh-2", "http://example.test/all", (), b"w2", T0 + timedelta(seconds=1))
    await store.create_webhook(other)
    assert await store.list_webhooks() == [hook, other]

    letters = [
        DeadLetter(f"dl-{i}", "wh-1", f"ev-{i}", b'{"x":1}', 3, "HTTP 503", T0 + i * LEASE)
        for i in range(3)
    ]
    for letter in letters:
        await store.add_dead_letter(letter)
    await store.add_dead_letter(replace(letters[0], id="dl-x", webhook_id="gone"))  # ignored
    assert await store.list_dead_letters() == letters
    assert await store.list_dead_letters(webhook_id="wh-2") == []
    assert await store.list_dead_letters(limit=1) == letters[:1]
    assert await store.take_dead_letter("dl-1") == letters[1]
    assert await store.take_dead_letter("dl-1") is None
    assert await store.delete_webhook("wh-1", events=(event("webhook.deleted", "wh-1"),))
    assert not await store.delete_webhook("wh-1", events=(event("webhook.deleted", "wh-1"),))
    assert await store.list_dead_letters() == []  # they went with their webhook
    assert await types(store) == ["webhook.created", "webhook.deleted"]


async def test_pruning_removes_only_events_published_long_enough_ago(store: Store) -> None:
    events = [event(aggregate_id=f"p-{i}") for i in range(3)]
    await store.append_events(events)
    await store.mark_published([events[0].id], at=T0)
    await store.mark_published([events[1].id], at=T0 + LEASE)
    assert await store.prune_outbox(T0 + LEASE) == 1
    remaining = [e.event.id for e in await store.read_outbox()]
    assert remaining == [events[1].id, events[2].id]
    assert await store.prune_outbox(T0 + 10 * LEASE) == 1  # never the unpublished one
    assert [e.event.id for e in await store.read_outbox()] == [events[2].id]


async def test_the_depth_counts_what_waits_to_be_relayed(store: Store) -> None:
    assert await store.outbox_depth() == 0
    await store.append_events([event(aggregate_id=f"p-{i}") for i in range(4)])
    assert await store.outbox_depth() == 4
    claimed = await store.claim_unpublished(3, now=T0, lease=LEASE)
    assert await store.outbox_depth() == 4  # leased is not relayed yet
    await store.mark_published([e.event.id for e in claimed], at=T0)
    assert await store.outbox_depth() == 1
