"""Abusing the HTTP OAuth endpoints: oversized and malformed requests are refused cheaply
with the RFC answers, and guessing client secrets or flooding revocations over HTTP
spends the very budgets the gRPC API charges (one limit per source, whichever API)."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import grpc
import pytest

from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import (
    CLIENT_GRANTS,
    PASSWORD,
    basic,
    make_client,
    make_principal,
    request,
)

StartServer = Callable[..., ServerProcess]
ENDPOINTS = ("/oauth2/token", "/oauth2/revoke", "/oauth2/introspect")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_requests_get_their_http_answers(server: ServerProcess, path: str) -> None:
    url = server.http + path
    # wrong method: 405 naming the one allowed
    for method in ("GET", "PUT", "DELETE"):
        answer = request(url, method=method)
        assert (answer.status, answer.headers["Allow"]) == (405, "POST"), method
        assert answer.json()["error"] == "invalid_request"
    # wrong media type: 415
    answer = request(
        url,
        body=b'{"grant_type": "client_credentials"}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 415
    # oversized, declared: 413 before the body is read
    big = b"token=" + b"A" * (32 * 1024)
    assert request(url, body=big).status == 413
    # oversized, chunked (no Content-Length): 413 once 16 KiB have arrived
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    chunks = (b"token=", *(b"A" * 4096 for _ in range(8)))
    connection.request(
        "POST",
        path,
        body=iter(chunks),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 413
    connection.close()
    # not UTF-8, too many fields: 400
    assert request(url, body=b"token=%FF%FE").json()["error"] == "invalid_request"
    many = "&".join(f"f{i}=x" for i in range(200)).encode()
    assert request(url, body=many).json()["error"] == "invalid_request"
    # the server still answers
    assert request(server.http + "/healthz", method="GET").status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        "Basic " + "YWJj",  # "abc": no colon
        "Basic //79",  # not UTF-8
        "Basic Og==",  # ":" : no client id
        "Basic " + "QUFB" * 1500,  # "AAA..." (4.5 KB): no colon
        "Bearer abc",
        "Basic",
    ],
)
def test_broken_basic_credentials_are_invalid_client(
    server: ServerProcess, authorization: str
) -> None:
    answer = request(
        server.http + "/oauth2/token",
        {"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    )
    assert answer.status == 401, answer.body
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="authority"'


def test_guessing_client_secrets_over_http_spends_the_grpc_source_budget(
    start_server: StartServer,
) -> None:
    """Wrong secrets at the token and introspection endpoints are charged to the source,
    as over gRPC: the same address then gets no password attempt through either API."""
    server = start_server(AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE="6")
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_principal(server)
    token_url, introspect_url = server.http + "/oauth2/token", server.http + "/oauth2/introspect"
    for guess in range(3):
        answer = request(
            token_url, {"grant_type": "client_credentials"}, headers=basic("app", f"cs_{guess}")
        )
        assert answer.status == 401
        answer = request(introspect_url, {"token": "x"}, headers=basic("app", f"cs_{guess}"))
        assert answer.status == 401
    with server.client(admin=False) as client, pytest.raises(grpc.RpcError) as caught:
        client.issue_with_password("alice", PASSWORD)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    answer = request(
        token_url,
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers=basic("app", secret),
    )
    assert answer.status == 429
    assert answer.json()["error"] == "temporarily_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1


def _revoke_over_grpc(server: ServerProcess) -> bool:
    """True when accepted, False when refused by the limit."""
    with server.client(admin=False) as client:
        try:
            client.revoke(access_token="not-a-token")
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            return False
    return True


def _revoke_over_http(server: ServerProcess) -> bool:
    answer = request(server.http + "/oauth2/revoke", {"token": "not-a-token"})
    if answer.status == 429:
        assert int(answer.headers["Retry-After"]) >= 1
        return False
    assert answer.status == 200
    return True


@pytest.mark.parametrize("first_api", ["http", "grpc"])
def test_revocation_floods_share_the_grpc_per_source_limit(
    start_server: StartServer, first_api: str
) -> None:
    """One API until the budget is spent: the other is refused too."""
    server = start_server(AUTHORITY_REVOKE_ATTEMPTS_PER_MINUTE="4")
    spend, other = (
        (_revoke_over_http, _revoke_over_grpc)
        if first_api == "http"
        else (_revoke_over_grpc, _revoke_over_http)
    )
    accepted = 0
    while spend(server):
        accepted += 1
        assert accepted <= 4, "the per-source revoke limit never refused"
    assert not other(server)
