"""A real server on either event loop: it says which in its ready line, and serves gRPC
and HTTP (whose connection guard once assumed asyncio's own transport classes)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import pytest

from authority.v1 import token_pb2
from tests.integration.server import ServerProcess

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
def test_a_server_serves_grpc_and_http_on_its_event_loop(
    start_server: Callable[..., ServerProcess], setting: str | None, expected: str
) -> None:
    pytest.importorskip("uvloop")
    server = start_server(**({"AUTHORITY_EVENT_LOOP": setting} if setting else {}))
    ready = next(e for e in server.events() if e.get("event") == "authority.ready")
    assert ready["event_loop"] == expected
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        token = client.issue_with_password("alice", PASSWORD).access_token
        assert client.verify(token).result == token_pb2.VERIFY_RESULT_VALID
    with urllib.request.urlopen(f"{server.http}/.well-known/jwks.json", timeout=10) as answer:
        assert json.load(answer)["keys"]
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as answer:
        assert b"authority_rpc_requests_total" in answer.read()
