"""OAuth 2.0 over HTTP against a real server process: the token, revocation and
introspection endpoints (RFC 6749, 7009, 7662), the discovery document (RFC 8414) and the
RFC 9068 shape of the tokens they hand out, next to the same calls over gRPC."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authority.v1 import admin_pb2, token_pb2
from tests.integration.server import ServerProcess

PASSWORD = "correct horse battery staple"
StartServer = Callable[..., ServerProcess]
GRANTS = admin_pb2.GrantType


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def request(
    url: str,
    form: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One HTTP call with the standard library (no client-side OAuth logic at all)."""
    data = body if body is not None else None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    call = urllib.request.Request(
        url, data=data, method=method, headers={**sent, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 section 2.3.1: each part form-urlencoded, then Basic."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def make_client(
    server: ServerProcess,
    client_id: str,
    grants: tuple[int, ...],
    *,
    confidential: bool = True,
    scopes: tuple[str, ...] = ("read", "write"),
    default_scopes: tuple[str, ...] = ("read",),
    audiences: tuple[str, ...] = ("default", "orders"),
) -> str:
    with server.client() as admin:
        return admin.create_client(
            admin_pb2.Client(
                id=client_id,
                confidential=confidential,
                grant_types=list(grants),
                audiences=list(audiences),
                scopes=list(scopes),
                default_scopes=list(default_scopes),
            )
        ).client_secret


def make_principal(server: ServerProcess, name: str = "alice") -> str:
    with server.client() as admin:
        return admin.create_principal(name, PASSWORD).id


def payload(token: str) -> dict[str, object]:
    claims = jwt.decode(token, options={"verify_signature": False})
    assert isinstance(claims, dict)
    return claims


# -- RFC 9068: client_id on every token, sid only with a session ---------------------------


def test_every_access_token_names_its_client_and_only_session_tokens_carry_a_sid(
    server: ServerProcess,
) -> None:
    secret = make_client(server, "svc", (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,))
    make_client(
        server,
        "web",
        (GRANTS.GRANT_TYPE_PASSWORD, GRANTS.GRANT_TYPE_REFRESH_TOKEN),
        confidential=False,
    )
    make_principal(server)
    with server.client(admin=False) as client:
        service = client.issue_with_client_credentials("svc", secret)
        login = client.issue_with_password("alice", PASSWORD, client_id="web")
        default = client.issue_with_password("alice", PASSWORD)
        verdict = client.verify(service.access_token)
    assert service.session_id == ""
    claims = payload(service.access_token)
    assert claims["client_id"] == "svc" and claims["sub"] == "svc"
    assert "sid" not in claims
    assert verdict.result == token_pb2.VERIFY_RESULT_VALID
    assert verdict.claims.session_id == "" and verdict.claims.client_id == "svc"
    assert payload(login.access_token)["client_id"] == "web"
    assert payload(login.access_token)["sid"] == login.session_id
    # The built-in default client has no registered id: its tokens name it by a reserved
    # value no registered client can take.
    assert payload(default.access_token)["client_id"] == "authority:default"
    assert payload(default.access_token)["sid"] == default.session_id

    # Envoy's ext_authz on the real server: no session header for a sessionless token.
    with server.channel() as channel:
        check = external_auth_pb2_grpc.AuthorizationStub(channel)
        ask = external_auth_pb2.CheckRequest()
        ask.attributes.request.http.headers["authorization"] = "Bearer " + service.access_token
        answer = check.Check(ask, timeout=5)
    set_headers = {o.header.key: o.header.value for o in answer.ok_response.headers}
    assert set_headers["x-authority-client-id"] == "svc"
    assert "x-authority-session-id" not in set_headers

    # Revoking the client still reaches its sessionless tokens (by client_id, not sid).
    with server.client() as admin:
        admin.revoke(client_id="svc")
        assert admin.verify(service.access_token).result == token_pb2.VERIFY_RESULT_REVOKED
