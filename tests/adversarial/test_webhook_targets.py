"""Webhooks cannot be aimed inside: internal destinations are refused at creation and at
delivery (the address really connected to), unless the operator's allow-list names them,
and delivery errors never tell open, closed and filtered ports apart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from authority.crypto import Kek, KekRing
from authority.domain.clock import SystemClock
from authority.domain.events import PRINCIPAL, OutboxEntry, new_event
from authority.domain.webhook_targets import parse_allow_list
from authority.domain.webhooks import Webhook
from authority.services.webhooks import WebhookDispatcher, webhook_secret_aad
from authority.store.sqlite import SqliteStore
from authority.v1 import admin_pb2
from tests.integration.server import ADMIN_TOKEN, ServerProcess

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
KEK = KekRing(Kek.from_secret(b"t" * 32))

# Every spelling of an internal destination we know of. Host names are real: they resolve
# through this machine's resolver (/etc/hosts).
INTERNAL_HOSTS = [
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack instance metadata
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata (CGNAT range)
    "168.63.129.16",  # Azure WireServer
    "2130706433",  # 127.0.0.1 in decimal
    "017700000001",  # ... in octal
    "0x7f000001",  # ... in hex
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "2852039166",  # 169.254.169.254 in decimal
    "0",
    "0.0.0.0",
    "[::]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:10.0.0.1]",
    "[2002:7f00:1::1]",  # 6to4 around 127.0.0.1
    "[64:ff9b::a9fe:a9fe]",  # NAT64 around 169.254.169.254
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "[fd12:3456::1]",  # ULA
    "[fe80::1]",
    "100.64.0.1",  # CGNAT
    "224.0.0.1",
    "239.255.255.250",
    "[ff02::1]",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.0.1",
    "[fec0::1]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",  # RFC 6761: loopback, whatever the resolver says
    socket.gethostname(),  # this machine (loopback in /etc/hosts here)
]


def _create(server: ServerProcess, url: str) -> grpc.StatusCode:
    with server.client() as client:
        try:
            client.admin.CreateWebhook(admin_pb2.CreateWebhookRequest(url=url), metadata=ADMIN)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "AUTHORITY_WEBHOOK_ALLOWED_NETWORKS" in (error.details() or "")
            return error.code()
    return grpc.StatusCode.OK


def test_internal_destinations_are_refused_at_creation(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    urls = [
        f"{scheme}://{host}{port}/hook"
        for host in INTERNAL_HOSTS
        for scheme, port in (("http", ""), ("https", ":8443"))
    ]
    refused = [url for url in urls if _create(server, url) is grpc.StatusCode.INVALID_ARGUMENT]
    accepted = sorted(set(urls) - set(refused))
    print(f"internal webhook forms refused: {len(refused)} of {len(urls)}")
    assert accepted == []
    # A public destination is still accepted (nothing is contacted at creation).
    assert _create(server, "https://198.51.99.7/hook") is grpc.StatusCode.OK
    with server.client() as client:
        listed = client.admin.ListWebhooks(admin_pb2.ListWebhooksRequest(), metadata=ADMIN)
    assert [w.url for w in listed.webhooks] == ["https://198.51.99.7/hook"]


def test_the_operator_allow_list_admits_only_what_it_names(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(AUTHORITY_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32, 10.1.0.0/16")
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook"):
        assert _create(server, url) is grpc.StatusCode.OK
    for url in ("http://127.0.0.2/hook", "http://[::1]/hook", "http://10.2.0.1/hook"):
        assert _create(server, url) is grpc.StatusCode.INVALID_ARGUMENT


# -- at delivery: the address really connected to ----------------------------------------


class _Receiver:
    def __init__(self) -> None:
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[_Receiver, int]]:
    state = _Receiver()
    app = web.Application()
    app.router.add_post("/hook", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield state, int(runner.addresses[0][1])
    await runner.cleanup()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "authority.db")
    await store.open()
    yield store
    await store.close()


async def _stored_webhook(store: SqliteStore, url: str, webhook_id: str) -> Webhook:
    """A subscription as it sits in the store (created when its name still resolved
    elsewhere, or before the allow-list shrank): creation checks are behind us."""
    hook = Webhook(
        id=webhook_id,
        url=url,
        event_types=(),
        wrapped_secret=KEK.wrap(b"whsec_test", aad=webhook_secret_aad(webhook_id)),
        created_at=datetime.now(UTC),
    )
    await store.create_webhook(hook)
    return hook


def _dispatcher(store: SqliteStore, allowed: str = "") -> WebhookDispatcher:
    return WebhookDispatcher(
        store=store,
        kek=KEK,
        clock=SystemClock(),
        max_attempts=1,
        timeout=timedelta(seconds=1),
        allowed=parse_allow_list(allowed),
    )


async def _deliver_one(dispatcher: WebhookDispatcher) -> None:
    event = new_event("principal.created", PRINCIPAL, "p-1", at=SystemClock().now())
    await dispatcher([OutboxEntry(1, event)])
    async with asyncio.timeout(30):
        await dispatcher.idle()


async def test_a_name_that_resolves_inside_is_refused_at_delivery(
    store: SqliteStore, receiver: tuple[_Receiver, int]
) -> None:
    """DNS rebinding: the stored URL names a host that now resolves to loopback (here
    ``localhost`` really does). Nothing reaches the local receiver."""
    state, port = receiver
    names = ["localhost", socket.gethostname()]
    for index, name in enumerate(names):
        await _stored_webhook(store, f"http://{name}:{port}/hook", f"wh_{index}")
    for index, literal in enumerate(["127.0.0.1", "2130706433", "[::ffff:127.0.0.1]"]):
        await _stored_webhook(store, f"http://{literal}:{port}/hook", f"wh_lit{index}")
    dispatcher = _dispatcher(store)
    try:
        await _deliver_one(dispatcher)
        letters = await dispatcher.dead_letters()
    finally:
        await dispatcher.close()
    assert state.hits == 0
    assert len(letters) == 5
    assert {letter.last_error for letter in letters} == {"destination not allowed"}


async def test_the_allow_list_lets_deliveries_through(
    store: SqliteStore, receiver: tuple[_Receiver, int]
) -> None:
    state, port = receiver
    await _stored_webhook(store, f"http://localhost:{port}/hook", "wh_ok")
    dispatcher = _dispatcher(store, allowed="127.0.0.0/8")
    try:
        await _deliver_one(dispatcher)
        assert await dispatcher.dead_letters() == []
    finally:
        await dispatcher.close()
    assert state.hits == 1


@contextlib.asynccontextmanager
async def _tcp_server(behaviour: str) -> AsyncIterator[int]:
    """``closing``: accepts and hangs up (an open non-HTTP port); ``silent``: accepts and
    never answers (a port behind a filter that swallows packets)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if behaviour == "silent":
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_delivery_errors_do_not_tell_ports_apart(store: SqliteStore) -> None:
    """An admin allowed to aim at a network must not get a port scanner with it: open,
    closed and filtered ports all read ``connection failed``."""
    async with _tcp_server("closing") as open_port, _tcp_server("silent") as filtered_port:
        targets = {
            "open": f"http://127.0.0.1:{open_port}/hook",
            "closed": f"http://127.0.0.1:{_closed_port()}/hook",
            "filtered": f"http://127.0.0.1:{filtered_port}/hook",
        }
        for name, url in targets.items():
            await _stored_webhook(store, url, f"wh_{name}")
        dispatcher = _dispatcher(store, allowed="127.0.0.0/8")
        try:
            await _deliver_one(dispatcher)
            letters = {d.webhook_id: d.last_error for d in await dispatcher.dead_letters()}
        finally:
            await dispatcher.close()
    assert letters == {f"wh_{name}": "connection failed" for name in targets}
