"""Webhooks against a real local HTTP receiver: signed deliveries, retries with backoff,
dead letters and their replay, and one slow endpoint never delaying another."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from authority.crypto import Kek, KekRing
from authority.domain.clock import SystemClock
from authority.domain.errors import InvalidArgument, NotFound
from authority.domain.events import PRINCIPAL, OutboxEntry, new_event
from authority.domain.webhook_targets import parse_allow_list
from authority.domain.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from authority.services.webhooks import WebhookDispatcher
from authority.store.sqlite import SqliteStore

KEK = KekRing(Kek.from_secret(b"w" * 32))
LOOPBACK_ALLOWED = parse_allow_list("127.0.0.1/32")


class Receiver:
    """Endpoints that succeed, fail on purpose, or are slow; records what it accepted."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.accepted: dict[str, list[str]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)
        self.failures_left = {"flaky": 2}
        self.down = True
        self.slow_release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        self.attempts[name] += 1
        signature_ok = verify(
            self.secrets[name],
            request.headers[TIMESTAMP_HEADER],
            body,
            request.headers[SIGNATURE_HEADER],
        )
        assert signature_ok, "bad signature"
        if name == "slow":
            await self.slow_release.wait()
        if name == "down" and self.down:
            return web.Response(status=503)
        if self.failures_left.get(name, 0) > 0:
            self.failures_left[name] -= 1
            return web.Response(status=500)
        event = json.loads(body)
        assert event["id"] == request.headers[EVENT_ID_HEADER]
        self.accepted[name].append(event["type"])
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield state, f"http://127.0.0.1:{port}"
    state.slow_release.set()
    await runner.cleanup()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "authority.db")
    await store.open()
    yield store
    await store.close()


def entries(*types: str) -> list[OutboxEntry]:
    clock = SystemClock()
    return [
        OutboxEntry(i, new_event(t, PRINCIPAL, f"p-{i}", at=clock.now()))
        for i, t in enumerate(types, start=1)
    ]


async def test_deliveries_retry_dead_letter_and_replay(
    store: SqliteStore, receiver: tuple[Receiver, str]
) -> None:
    state, base = receiver
    dispatcher = WebhookDispatcher(
        store=store,
        kek=KEK,
        clock=SystemClock(),
        max_attempts=3,
        base_delay=timedelta(milliseconds=10),
        max_delay=timedelta(milliseconds=40),
        allowed=LOOPBACK_ALLOWED,  # the receiver is local: the operator's allow-list says so
    )
    try:
        hooks = {}
        for name, types in [
            ("ok", ()),
            ("flaky", ("login.failed",)),
            ("slow", ()),
            ("down", ("principal.created",)),
        ]:
            hook, secret = await dispatcher.create(f"{base}/{name}", types)
            state.secrets[name] = secret.encode()
            hooks[name] = hook
        assert secret.startswith("whsec_")
        assert secret.encode() not in (await store.list_webhooks())[0].wrapped_secret

        await dispatcher(entries("principal.created", "login.failed", "login.failed"))

        # The fast endpoint gets everything while the slow one is still stuck on its first.
        async with asyncio.timeout(5):
            while len(state.accepted["ok"]) < 3 or len(state.accepted["flaky"]) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert state.accepted["ok"] == ["principal.created", "login.failed", "login.failed"]
        assert state.accepted["flaky"] == ["login.failed", "login.failed"]  # after 2 retries
        assert state.attempts["flaky"] == 4
        assert state.accepted["slow"] == []

        async with asyncio.timeout(5):
            while not await dispatcher.dead_letters():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        [letter] = await dispatcher.dead_letters(hooks["down"].id)
        assert letter.attempts == 3 and letter.last_error == "HTTP 503"
        assert json.loads(letter.payload)["type"] == "principal.created"
        assert state.attempts["down"] == 3

        state.down = False
        await dispatcher.replay(letter.id)
        state.slow_release.set()
        async with asyncio.timeout(5):
            await dispatcher.idle()
        assert state.accepted["down"] == ["principal.created"]
        assert len(state.accepted["slow"]) == 3
        assert await dispatcher.dead_letters() == []
        with pytest.raises(NotFound):
            await dispatcher.replay(letter.id)

        assert await dispatcher.delete(hooks["ok"].id)
        assert [w.id for w in await dispatcher.subscriptions()] == [
            hooks[n].id for n in ("flaky", "slow", "down")
        ]
        written = [e.event.type for e in await store.read_outbox()]
        assert written == ["webhook.created"] * 4 + ["webhook.deleted"]
    finally:
        await dispatcher.close()


async def test_only_http_urls_are_accepted(store: SqliteStore) -> None:
    dispatcher = WebhookDispatcher(store=store, kek=KEK, clock=SystemClock())
    for url in ("file:///etc/passwd", "ftp://example.test/x", "not a url", ""):
        with pytest.raises(InvalidArgument):
            await dispatcher.create(url, ())
