"""The outbox end to end in process: real services over a real SQLite store write their
events with their changes, the relay moves them through the in-process sink to the audit
consumer, at least once and in order, and no event carries a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from authority.domain.audit import AuditQuery
from authority.domain.clock import SystemClock
from authority.domain.errors import Unauthenticated
from authority.domain.events import PRINCIPAL, OutboxEntry, new_event
from authority.domain.password_policy import PasswordPolicy
from authority.services.clients import ClientService
from authority.services.outbox import AUDIT_GROUP, AuditConsumer, LocalEventSink, OutboxRelay
from authority.services.principals import PrincipalService
from authority.store.sqlite import SqliteStore
from tests.component.test_session_lifecycle import GRACE, Harness

PASSWORD = "a long enough password for bob"
WRONG = "definitely-not-the-password-9"
NEW_PASSWORD = "another long password for bob"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "authority.db")
    await store.open()
    yield store
    await store.close()


async def eventually(predicate: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5.0):
        while not await predicate():  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.01)


def relay_for(store: SqliteStore, sink: LocalEventSink) -> OutboxRelay:
    return OutboxRelay(
        store=store,
        sink=sink,
        clock=SystemClock(),
        batch_size=3,
        poll_interval=timedelta(milliseconds=10),
        max_poll_interval=timedelta(milliseconds=50),
    )


async def test_the_relay_delivers_in_order_and_marks_published(store: SqliteStore) -> None:
    clock = SystemClock()
    events = [new_event("login.failed", PRINCIPAL, f"p-{i}", at=clock.now()) for i in range(10)]
    await store.append_events(events)
    relay = relay_for(store, LocalEventSink())
    seen: list[int] = []

    async def handler(entries: Sequence[OutboxEntry]) -> None:
        seen.extend(e.sequence for e in entries)

    tasks = [
        asyncio.create_task(relay.consume(AUDIT_GROUP, handler)),
        asyncio.create_task(relay.run()),
    ]
    try:
        await eventually(lambda: _published(store, [e.id for e in events]))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert seen == sorted(seen) and len(seen) == 10
    assert relay.lag.count == 10 and relay.published == 10


async def _published(store: SqliteStore, ids: list[str]) -> bool:
    return await store.outbox_published(ids) == set(ids)


async def test_a_failing_consumer_gets_the_events_again_and_records_them_once(
    store: SqliteStore,
) -> None:
    clock = SystemClock()
    events = [new_event("principal.created", PRINCIPAL, f"p-{i}", at=clock.now()) for i in range(4)]
    await store.append_events(events)
    audit = AuditConsumer(store)
    failures = 2

    async def flaky(entries: Sequence[OutboxEntry]) -> None:
        nonlocal failures
        await audit(entries)  # recorded, then "crashes" before acknowledging
        if failures:
            failures -= 1
            raise RuntimeError("consumer crashed")

    sink = LocalEventSink(timeout=1.0)
    relay = OutboxRelay(
        store=store,
        sink=sink,
        clock=clock,
        lease=timedelta(milliseconds=50),
        poll_interval=timedelta(milliseconds=10),
        max_poll_interval=timedelta(milliseconds=50),
    )
    tasks = [
        asyncio.create_task(relay.consume(AUDIT_GROUP, flaky)),
        asyncio.create_task(relay.run()),
    ]
    try:
        await eventually(lambda: _published(store, [e.id for e in events]))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    records = await store.list_audit(AuditQuery())
    assert [r.event_id for r in records] == [e.id for e in events]
    assert failures == 0  # the consumer crashed twice and the events still landed once each


async def test_a_lifecycle_is_audited_in_order_without_secrets(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.open()
    try:
        principals = PrincipalService(
            store=h.store,
            hasher=h.hasher,
            clock=h.clock,
            policy=PasswordPolicy.default(min_length=8),
            revocations=h.revocations,
        )
        clients = ClientService(
            store=h.store,
            clock=h.clock,
            default_client=h.clients.default_client,
            revocations=h.revocations,
            max_access_ttl_seconds=60,
        )
        bob = await principals.create("bob", PASSWORD)
        pair = await h.password_grant.issue("bob", PASSWORD)
        with pytest.raises(Unauthenticated):
            await h.password_grant.issue("bob", WRONG)
        second = await h.refresher.refresh(pair.refresh_token)
        h.clock.advance(GRACE + timedelta(seconds=1))
        with pytest.raises(Unauthenticated):
            await h.refresher.refresh(pair.refresh_token)  # reuse: the session is revoked
        third = await h.password_grant.issue("bob", PASSWORD)
        await h.token_revocations.revoke_access_token(third.access_token)
        await h.token_revocations.revoke_refresh_token(third.refresh_token)
        await principals.set_password("bob", NEW_PASSWORD, keep_sessions=False)
        template = replace(h.clients.default_client, id="billing")
        client, secret = await clients.create(template, confidential=True)
        new_secret = await clients.rotate_secret(client.id)
        rotated = await h.keys.rotate()
        assert rotated.next_key is not None
        await h.keys.compromise(rotated.next_key.kid)

        sink = LocalEventSink()
        relay = relay_for(h.store, sink)
        audit = AuditConsumer(h.store)
        tasks = [
            asyncio.create_task(relay.consume(AUDIT_GROUP, audit)),
            asyncio.create_task(relay.run()),
        ]
        outbox = await h.store.read_outbox()
        try:
            await eventually(lambda: _published(h.store, [e.event.id for e in outbox]))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        actions = [r.action for r in await h.store.list_audit(AuditQuery(limit=500))]
        expected = [
            "principal.created",
            "login.succeeded",
            "session.started",
            "login.failed",
            "session.refreshed",
            "session.refresh_reuse_detected",
            "revocation.session",
            "login.succeeded",
            "session.started",
            "revocation.token",
            "revocation.session",
            "principal.password_set",  # the cause, then the revocation, in one transaction
            "revocation.subject",
            "client.created",
            "client.secret_rotated",
            "key.created",
            "key.compromised",
        ]
        assert [a for a in actions if a in expected][-len(expected) :] == expected
        assert actions[0] == "key.created"  # the bootstrap key, before everything else

        about_bob = await h.store.list_audit(AuditQuery(target_id=bob.id))
        assert [r.action for r in about_bob][:4] == [
            "principal.created",
            "login.succeeded",
            "login.failed",
            "login.succeeded",
        ]
        failed = await h.store.list_audit(AuditQuery(action="login.failed"))
        assert [r.result for r in failed] == ["failure"]

        # No secret in any outbox row or audit record.
        stored = await h.store.read_outbox()
        secrets_used = [
            PASSWORD,
            WRONG,
            NEW_PASSWORD,
            secret,
            new_secret,
            pair.refresh_token,
            pair.access_token,
            second.refresh_token,
            second.access_token,
            third.refresh_token,
            third.access_token,
            bob.password_hash,
        ]
        dumped = json.dumps(
            [{**e.event.data, "actor": e.event.actor, "id": e.event.aggregate_id} for e in stored]
        )
        for value in secrets_used:
            assert value not in dumped
        for record in await h.store.list_audit(AuditQuery(limit=500)):
            assert not any(value in json.dumps(dict(record.data)) for value in secrets_used)
    finally:
        await h.close()
