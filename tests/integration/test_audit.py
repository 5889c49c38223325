"""The audit log against the real server process: a lifecycle shows up in commit order,
filtered and paginated, through the admin RPC and the `authority audit` command; the
outbox it came from holds no password or token."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from authority_client import AuthorityClient

from authority.domain.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from authority.v1 import admin_pb2
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "correct horse battery staple"
WRONG = "not-the-password-at-all-42"
GENEROUS = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "1000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "1000",
    "AUTHORITY_REFRESH_GRACE": "1s",
}


def _all(client: AuthorityClient, **filters: object) -> list[admin_pb2.AuditEvent]:
    events: list[admin_pb2.AuditEvent] = []
    token = ""
    while True:
        page = client.list_audit_events(page_token=token, **filters)  # type: ignore[arg-type]
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def _wait_for(client: AuthorityClient, action: str, count: int = 1) -> list[admin_pb2.AuditEvent]:
    deadline = time.monotonic() + 10
    while True:
        events = _all(client)
        if sum(e.action == action for e in events) >= count:
            return events
        assert time.monotonic() < deadline, [e.action for e in events]
        time.sleep(0.02)


def test_a_lifecycle_is_audited_in_order(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(**GENEROUS)
    with server.client() as client:
        principal = client.create_principal("dora", PASSWORD)
        first = client.issue_with_password("dora", PASSWORD)
        with pytest.raises(grpc.RpcError):
            client.issue_with_password("dora", WRONG)
        second = client.refresh(first.refresh_token)
        # Before the session's revocation: once that covers it, revoking it records nothing.
        client.revoke(access_token=second.access_token)
        time.sleep(1.2)  # past the grace window: presenting it again is reuse
        with pytest.raises(grpc.RpcError):
            client.refresh(first.refresh_token)
        client.rotate_keys()

        events = _wait_for(client, "key.created", count=2)  # bootstrap, then the rotation
        actions = [e.action for e in events]
        lifecycle = [
            "principal.created",
            "login.succeeded",
            "session.started",
            "login.failed",
            "session.refreshed",
            "revocation.token",
            "session.refresh_reuse_detected",
            "revocation.session",
            "key.created",
        ]
        start = actions.index("principal.created")
        assert [a for a in actions[start:] if a in lifecycle] == lifecycle
        assert actions[0] == "key.created"  # the bootstrap key, by the system
        assert events[0].actor == "system"
        sequences = [e.sequence for e in events]
        assert sequences == sorted(sequences)

        by_action = {e.action: e for e in events[start:]}
        created = by_action["principal.created"]
        assert created.actor == "admin"
        assert created.source_address == "127.0.0.1"
        assert created.request_id
        assert created.target == principal.id and created.target_type == "principal"
        assert json.loads(created.details_json) == {"name": "dora"}
        assert by_action["login.failed"].result == "failure"
        assert by_action["login.succeeded"].actor == principal.id
        assert by_action["session.started"].target == first.session_id
        assert by_action["key.created"].actor == "admin"

        # Filters: by target, by action, by time range.
        about_dora = _all(client, target=principal.id)
        assert [e.action for e in about_dora] == [
            "principal.created",
            "login.succeeded",
            "login.failed",
        ]
        failed = _all(client, action="login.failed")
        assert [e.target for e in failed] == [principal.id]
        occurred = [e.occurred_at.ToDatetime(UTC) for e in events]
        window = _all(
            client, start_time=occurred[start], end_time=occurred[start] + timedelta(microseconds=1)
        )
        assert [e.id for e in window] == [
            e.id for e, at in zip(events, occurred, strict=True) if at == occurred[start]
        ]
        assert _all(client, start_time=datetime.now(UTC) + timedelta(hours=1)) == []

        # Pagination: pages of two add up to the whole log, without repeats.
        paged: list[admin_pb2.AuditEvent] = []
        page = client.list_audit_events(page_size=2)
        while True:
            assert len(page.events) <= 2
            paged += page.events
            if not page.next_page_token:
                break
            page = client.list_audit_events(page_size=2, page_token=page.next_page_token)
        assert [e.id for e in paged] == [e.id for e in events]

        with pytest.raises(grpc.RpcError) as bad_token:
            client.list_audit_events(page_token="not-a-token")
        assert bad_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with server.client(admin=False) as anonymous, pytest.raises(grpc.RpcError) as refused:
        anonymous.admin.ListAuditEvents(admin_pb2.ListAuditEventsRequest())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    # The CLI: one JSON object per line.
    listed = subprocess.run(
        [sys.executable, "-m", "authority.cli", "audit", "--target-id", principal.id, "--all"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "AUTHORITY_GRPC_ADDRESS": server.target,
            "AUTHORITY_ADMIN_TOKEN": ADMIN_TOKEN,
        },
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [line["action"] for line in lines] == [
        "principal.created",
        "login.succeeded",
        "login.failed",
    ]

    # No secret in any outbox row.
    with sqlite3.connect(f"file:{server.data_dir / 'authority.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT * FROM outbox").fetchall()
        audit_rows = db.execute("SELECT * FROM audit_log").fetchall()
    dumped = json.dumps([list(map(str, row)) for row in rows + audit_rows])
    for secret in (
        PASSWORD,
        WRONG,
        ADMIN_TOKEN,
        first.access_token,
        first.refresh_token,
        second.access_token,
        second.refresh_token,
    ):
        assert secret not in dumped


def test_relay_lag_is_small(start_server: Callable[..., ServerProcess]) -> None:
    """Committed to audited, measured from outside: well under the idle poll interval."""
    server = start_server(**GENEROUS)
    with server.client() as client:
        lags = []
        for i in range(10):
            started = time.monotonic()
            client.create_principal(f"lag-{i}", PASSWORD)
            while not client.list_audit_events(action="principal.created").events[i:]:
                time.sleep(0.005)
            lags.append(time.monotonic() - started)
    lags.sort()
    median, worst = lags[5] * 1000, lags[-1] * 1000
    print(f"relay lag (create -> audited): median {median:.0f} ms, max {worst:.0f} ms")
    assert lags[5] < 1.5


def test_replicas_share_the_event_stream(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """PostgreSQL and a Redis stream: events written on any replica are audited exactly
    once, by whichever replica's consumer got them, and every replica lists them all."""
    env = {
        **GENEROUS,
        "AUTHORITY_REDIS_URL": services.redis_url(),
        "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
        "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
    }
    with services.fresh_database() as database:
        env["AUTHORITY_DATABASE_URL"] = database
        servers = [start_server(tmp_path / f"replica-{i}", **env) for i in range(2)]
        names = [f"replica-user-{i}" for i in range(6)]
        for i, name in enumerate(names):
            with servers[i % 2].client() as client:
                client.create_principal(name, PASSWORD)
                client.issue_with_password(name, PASSWORD)
        for server in servers:
            with server.client() as client:
                deadline = time.monotonic() + 10
                while True:
                    events = _all(client)
                    created = [e for e in events if e.action == "principal.created"]
                    logins = [e for e in events if e.action == "login.succeeded"]
                    if len(created) == len(logins) == len(names):
                        break
                    assert time.monotonic() < deadline, [e.action for e in events]
                    time.sleep(0.05)
                assert sorted(json.loads(e.details_json)["name"] for e in created) == names
                assert len({e.id for e in events}) == len(events)


class _Receiver(BaseHTTPRequestHandler):
    """Fails the first delivery on purpose, accepts the rest; checks every signature."""

    secret = b""
    received: ClassVar[list[dict[str, object]]] = []
    attempts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.attempts.append(self.headers[SIGNATURE_HEADER])
        valid = verify(
            self.secret, self.headers[TIMESTAMP_HEADER], body, self.headers[SIGNATURE_HEADER]
        )
        status = 401 if not valid else 500 if len(self.attempts) == 1 else 204
        if status == 204:
            self.received.append(json.loads(body))
        self.send_response(status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_webhooks_are_signed_and_retried(start_server: Callable[..., ServerProcess]) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        # The receiver is local: only the operator's allow-list lets a webhook aim there.
        server = start_server(**GENEROUS, AUTHORITY_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32")
        with server.client() as client:
            created = client.admin.CreateWebhook(
                admin_pb2.CreateWebhookRequest(
                    url=f"http://127.0.0.1:{receiver.server_port}/hook",
                    event_types=["principal.created"],
                ),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
            )
            _Receiver.secret = created.secret.encode()
            principal = client.create_principal("erin", PASSWORD)
            deadline = time.monotonic() + 15
            while not _Receiver.received:
                assert time.monotonic() < deadline, _Receiver.attempts
                time.sleep(0.05)
            [delivered] = _Receiver.received
            assert delivered["type"] == "principal.created"
            assert delivered["aggregate_id"] == principal.id
            assert len(_Receiver.attempts) == 2  # the failure, then the retry
            admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
            listed = client.admin.ListWebhooks(admin_pb2.ListWebhooksRequest(), metadata=admin)
            assert [w.id for w in listed.webhooks] == [created.webhook.id]
            assert created.secret not in str(listed)
            letters = client.admin.ListDeadLetters(
                admin_pb2.ListDeadLettersRequest(), metadata=admin
            )
            assert list(letters.dead_letters) == []
            deleted = client.admin.DeleteWebhook(
                admin_pb2.DeleteWebhookRequest(id=created.webhook.id), metadata=admin
            )
            assert deleted.deleted
            _wait_for(client, "webhook.deleted")
    finally:
        receiver.shutdown()
