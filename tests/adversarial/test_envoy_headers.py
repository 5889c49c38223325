"""Forged identity headers through a real Envoy, to an upstream that folds ``_`` into ``-``.

CGI and WSGI (PEP 3333) present header ``x-authority-scope`` as ``HTTP_X_AUTHORITY_SCOPE``,
and so also ``x_authority_scope``: an upstream behind Envoy cannot tell the identity
headers ext_authz set from a client's underscore spelling of them. Every shipped Envoy
configuration must therefore refuse (or drop) header names with underscores, and Check
must remove every client-sent ``x-authority-*`` variant it sees.

The upstream here is the standard library's own WSGI server (``wsgiref``), which folds
names exactly that way and joins repeated headers with commas.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import yaml

from authority.v1 import admin_pb2
from tests.envoy import conftest as envoy_fixtures
from tests.envoy.conftest import EnvoyProcess, envoy_config, example_config
from tests.integration.server import ServerProcess

PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ENVOY_CONFIGS = sorted((ROOT / "deploy").rglob("envoy*.yaml"))
IDENTITY = ("HTTP_X_AUTHORITY_SUBJECT", "HTTP_X_AUTHORITY_SCOPE", "HTTP_X_AUTHORITY_CLIENT_ID")

# tests/envoy's fixtures: the Envoy binary from .venv-envoy, and Envoys stopped afterwards.
envoy_binary = envoy_fixtures.envoy_binary
start_envoy = envoy_fixtures.start_envoy

StartServer = Callable[..., ServerProcess]
StartEnvoy = Callable[..., EnvoyProcess]


# -- the upstream: wsgiref, as a CGI-style application sees headers ----------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgiUpstream:
    """Records the ``HTTP_X_AUTHORITY_*`` environ of every request it serves."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._server = make_server(
            "127.0.0.1",
            0,
            self._app,
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        identity = {k: str(v) for k, v in environ.items() if k.startswith("HTTP_X_AUTHORITY")}
        self.seen.append(identity)
        body = json.dumps(identity).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    def __enter__(self) -> WsgiUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def wsgi_upstream() -> Iterator[WsgiUpstream]:
    with WsgiUpstream() as upstream:
        yield upstream


def _send(port: int, path: str, headers: Sequence[tuple[str, str]]) -> int:
    """One request with exactly these header lines (repeats included); the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def _setup(server: ServerProcess) -> tuple[str, str, str]:
    """alice's id, her access token (scope read) and a client-credentials token."""
    with server.client() as admin:
        alice = admin.create_principal("alice", PASSWORD).id
        admin.create_client(
            admin_pb2.Client(
                id="web",
                confidential=False,
                grant_types=[admin_pb2.GRANT_TYPE_PASSWORD],
                audiences=["default"],
                scopes=["read", "admin"],
                default_scopes=["read"],
            )
        )
        secret = admin.create_client(
            admin_pb2.Client(
                id="svc",
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
            )
        ).client_secret
    with server.client(admin=False) as client:
        user = client.issue_with_password("alice", PASSWORD, client_id="web").access_token
        service = client.issue_with_client_credentials("svc", secret).access_token
    return alice, user, service


# Spellings of forged identity a client may try. Each is sent alone and in a crowd.
FORGERIES: dict[str, list[tuple[str, str]]] = {
    "underscores": [("x_authority_scope", "admin"), ("x_authority_subject", "p_forged")],
    "mixed case underscores": [("X_Authority_Scope", "admin"), ("X_AUTHORITY_SUBJECT", "p_forged")],
    "dash then underscore": [("x-authority_scope", "admin"), ("x-authority_subject", "p_forged")],
    "underscore then dash": [("x_authority-scope", "admin"), ("x_authority-client-id", "svc")],
    "upper case dashes": [("X-AUTHORITY-SCOPE", "admin"), ("X-Authority-Subject", "p_forged")],
    "duplicates": [
        ("x-authority-subject", "p_forged"),
        ("x-authority-subject", "p_forged2"),
        ("x-authority-scope", "admin"),
        ("x-authority-scope", "admin"),
    ],
    "session id": [("x-authority-session-id", "s_forged")],
    "unknown identity header": [("x-authority-role", "admin"), ("x_authority_role", "admin")],
}


def _assert_no_forgery(
    upstream: WsgiUpstream, before: int, status: int, expected: dict[str, str], case: str
) -> None:
    """Refused outright, or the upstream saw exactly the authority's identity headers."""
    received = upstream.seen[before:]
    if status >= 400:
        assert status == 400, f"{case}: unexpected status {status}"
        assert received == [], f"{case}: a refused request still reached the upstream"
        return
    assert status == 200, f"{case}: {status}"
    (environ,) = received
    assert environ == expected, f"{case}: the upstream read {environ}, expected {expected}"


@pytest.mark.parametrize("config_name", ["example", "test bootstrap"])
def test_no_spelling_of_an_identity_header_reaches_a_wsgi_upstream(
    start_server: StartServer,
    start_envoy: StartEnvoy,
    wsgi_upstream: WsgiUpstream,
    config_name: str,
) -> None:
    server = start_server(AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE="1000")
    alice, user_token, service_token = _setup(server)
    if config_name == "example":
        envoy = start_envoy(example_config(server, wsgi_upstream.port))
        path = "/api/hello"
    else:
        envoy = start_envoy(envoy_config(server, wsgi_upstream.port, jwks_cache_duration="60s"))
        path = "/both/hello"
    # Baseline: an honest request gets exactly the authority's headers, and no others.
    expected: dict[str, dict[str, str]] = {}
    for token, subject, client_id in ((user_token, alice, "web"), (service_token, "svc", "svc")):
        before = len(wsgi_upstream.seen)
        assert _send(envoy.port, path, [("Authorization", f"Bearer {token}")]) == 200
        (honest,) = wsgi_upstream.seen[before:]
        # A user's token has a session; a client-credentials token has none (RFC 9068),
        # so no session header at all reaches the upstream for it.
        has_session = token is user_token
        if has_session:
            assert honest["HTTP_X_AUTHORITY_SESSION_ID"].startswith("s_")
        else:
            assert "HTTP_X_AUTHORITY_SESSION_ID" not in honest
        assert {k: v for k, v in honest.items() if k in IDENTITY} == {
            "HTTP_X_AUTHORITY_SUBJECT": subject,
            "HTTP_X_AUTHORITY_CLIENT_ID": client_id,
            "HTTP_X_AUTHORITY_SCOPE": "read",
        }
        assert len(honest) == (4 if has_session else 3), honest
        expected[token] = honest

    refused = 0
    crowd = [header for headers in FORGERIES.values() for header in headers]
    for case, forged in [*FORGERIES.items(), ("all at once", crowd)]:
        for token in (user_token, service_token):
            # Forged headers before and after the credential: order must not matter.
            for headers in (
                [*forged, ("Authorization", f"Bearer {token}")],
                [("Authorization", f"Bearer {token}"), *forged],
            ):
                before = len(wsgi_upstream.seen)
                status = _send(envoy.port, path, headers)
                _assert_no_forgery(wsgi_upstream, before, status, expected[token], case)
                refused += status == 400
    # Underscored names are refused by Envoy (headers_with_underscores_action), not guessed.
    assert refused >= 4 * 5 + 4, envoy.logs()

    # Without a token nothing reaches the upstream, forged headers or not.
    before = len(wsgi_upstream.seen)
    assert _send(envoy.port, path, crowd) in {400, 401}
    assert wsgi_upstream.seen[before:] == []


def _connection_managers(document: Any) -> Iterator[dict[str, Any]]:
    """Every HttpConnectionManager config in a bootstrap document."""
    if isinstance(document, dict):
        if str(document.get("@type", "")).endswith("HttpConnectionManager"):
            yield document
        for value in document.values():
            yield from _connection_managers(value)
    elif isinstance(document, list):
        for value in document:
            yield from _connection_managers(value)


def test_every_shipped_envoy_config_refuses_underscored_header_names() -> None:
    """deploy/envoy/*.yaml (the example and the compose front) and the test bootstrap."""
    assert {path.name for path in SHIPPED_ENVOY_CONFIGS} >= {"envoy.yaml", "envoy-compose.yaml"}
    documents = {str(path): yaml.safe_load(path.read_text()) for path in SHIPPED_ENVOY_CONFIGS}
    fake = ServerProcess(Path("/nonexistent"))
    fake.grpc_port, fake.http_port = 1, 2
    documents["tests/envoy bootstrap"] = envoy_config(fake, 3, jwks_cache_duration="1s")
    for name, document in documents.items():
        managers = list(_connection_managers(document))
        assert managers, name
        for manager in managers:
            options = manager.get("common_http_protocol_options", {})
            assert options.get("headers_with_underscores_action") == "REJECT_REQUEST", name
