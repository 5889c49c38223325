"""OAuth 2.0 over HTTP against a real server process: the token, revocation and
introspection endpoints (RFC 6749, 7009, 7662), the discovery document (RFC 8414) and the
RFC 9068 shape of the tokens they hand out, next to the same calls over gRPC."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import jwt
import pytest

from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.v1 import admin_pb2, token_pb2
from tests.integration.server import ServerProcess

PASSWORD = "correct horse battery staple"
StartServer = Callable[..., ServerProcess]
GRANTS = admin_pb2.GrantType
FORM = "application/x-www-form-urlencoded"
CLIENT_GRANTS = (
    GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,
    GRANTS.GRANT_TYPE_PASSWORD,
    GRANTS.GRANT_TYPE_REFRESH_TOKEN,
)


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


# -- the discovery document against real calls ----------------------------------------------


def discovery(server: ServerProcess) -> dict[str, object]:
    rfc8414 = request(server.http + "/.well-known/oauth-authorization-server", method="GET")
    openid = request(server.http + "/.well-known/openid-configuration", method="GET")
    assert rfc8414.status == openid.status == 200
    assert rfc8414.body == openid.body
    return rfc8414.json()


def test_every_advertised_capability_answers_a_real_call(server: ServerProcess) -> None:
    document = discovery(server)
    assert set(document) == {
        "issuer",
        "jwks_uri",
        "token_endpoint",
        "token_endpoint_auth_methods_supported",
        "grant_types_supported",
        "revocation_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint",
        "introspection_endpoint_auth_methods_supported",
    }
    assert document["issuer"] == server.http
    assert document["grant_types_supported"] == [
        "password",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]
    assert request(str(document["jwks_uri"]), method="GET").status == 200

    secret = make_client(server, "app", (*CLIENT_GRANTS, GRANTS.GRANT_TYPE_TOKEN_EXCHANGE))
    make_client(
        server,
        "public",
        (GRANTS.GRANT_TYPE_PASSWORD, GRANTS.GRANT_TYPE_REFRESH_TOKEN),
        confidential=False,
    )
    make_principal(server)
    token_url = str(document["token_endpoint"])

    def authenticated(method: str, client_id: str = "app") -> tuple[dict[str, str], dict[str, str]]:
        """(form fields, headers) for a client authentication method."""
        if method == "client_secret_basic":
            return {}, basic(client_id, secret)
        if method == "client_secret_post":
            return {"client_id": client_id, "client_secret": secret}, {}
        assert method == "none"
        return {"client_id": "public"}, {}

    grant_forms = {
        "password": {"grant_type": "password", "username": "alice", "password": PASSWORD},
        "client_credentials": {"grant_type": "client_credentials"},
    }
    exchange = "urn:ietf:params:oauth:grant-type:token-exchange"
    issued: dict[tuple[str, str], dict[str, object]] = {}
    for method in document["token_endpoint_auth_methods_supported"]:  # type: ignore[attr-defined]
        for grant in document["grant_types_supported"]:  # type: ignore[attr-defined]
            if grant in ("refresh_token", exchange):
                continue  # below, with each method's refresh token or access token
            if grant == "client_credentials" and method == "none":
                continue  # needs a confidential client by definition (RFC 6749 4.4)
            fields, headers = authenticated(method)
            answer = request(token_url, {**grant_forms[grant], **fields}, headers=headers)
            assert answer.status == 200, (method, grant, answer.body)
            issued[method, grant] = answer.json()
    for method in document["token_endpoint_auth_methods_supported"]:  # type: ignore[attr-defined]
        fields, headers = authenticated(method)
        refresh_token = issued[method, "password"]["refresh_token"]
        form = {"grant_type": "refresh_token", "refresh_token": str(refresh_token), **fields}
        answer = request(token_url, form, headers=headers)
        assert answer.status == 200, (method, answer.body)
    for method in document["token_endpoint_auth_methods_supported"]:  # type: ignore[attr-defined]
        if method == "none":
            continue  # RFC 8693 exchange is for confidential clients only
        fields, headers = authenticated(method)
        form = {
            "grant_type": exchange,
            "subject_token": str(issued[method, "password"]["access_token"]),
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            **fields,
        }
        answer = request(token_url, form, headers=headers)
        assert answer.status == 200, (method, answer.body)
        assert answer.json()["issued_token_type"] == form["subject_token_type"]

    access = str(issued["client_secret_basic", "client_credentials"]["access_token"])
    introspect_url = str(document["introspection_endpoint"])
    for method in document["introspection_endpoint_auth_methods_supported"]:  # type: ignore[attr-defined]
        fields, headers = authenticated(method)
        answer = request(introspect_url, {"token": access, **fields}, headers=headers)
        assert answer.status == 200 and answer.json()["active"] is True, (method, answer.body)
    revoke_url = str(document["revocation_endpoint"])
    for method in document["revocation_endpoint_auth_methods_supported"]:  # type: ignore[attr-defined]
        fields, headers = authenticated(method)
        victim = str(issued["client_secret_post", "client_credentials"]["access_token"])
        answer = request(revoke_url, {"token": victim, **fields}, headers=headers)
        assert answer.status == 200, (method, answer.body)


def test_the_password_grant_switch_turns_it_off_for_http_grpc_and_discovery(
    start_server: StartServer,
) -> None:
    server = start_server(AUTHORITY_OAUTH_PASSWORD_GRANT="false")
    assert "password" not in discovery(server)["grant_types_supported"]  # type: ignore[operator]
    make_principal(server)
    answer = request(
        server.http + "/oauth2/token",
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
    )
    assert answer.status == 400
    assert answer.json()["error"] == "unsupported_grant_type"
    with server.client(admin=False) as client, pytest.raises(grpc.RpcError) as caught:
        client.issue_with_password("alice", PASSWORD)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "password grant is disabled" in caught.value.details()  # type: ignore[attr-defined]


# -- the token endpoint ---------------------------------------------------------------------


def test_token_responses_follow_rfc_6749(server: ServerProcess) -> None:
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_principal(server)
    url = server.http + "/oauth2/token"
    answer = request(
        url,
        {"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "read"},
        headers=basic("app", secret),
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Pragma"] == "no-cache"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer" and body["scope"] == "read"
    assert 0 < int(body["expires_in"]) <= 600  # type: ignore[call-overload]
    with server.client(admin=False) as client:
        verdict = client.verify(str(body["access_token"]))
    assert verdict.result == token_pb2.VERIFY_RESULT_VALID
    # client credentials: no refresh token
    answer = request(
        url,
        {"grant_type": "client_credentials", "audience": "orders"},
        headers=basic("app", secret),
    )
    assert set(answer.json()) == {"access_token", "token_type", "expires_in", "scope"}
    assert payload(str(answer.json()["access_token"]))["aud"] == "orders"


def test_refresh_rotates_replays_within_grace_and_detects_reuse(server: ServerProcess) -> None:
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_principal(server)
    url = server.http + "/oauth2/token"
    auth = basic("app", secret)
    login = request(
        url, {"grant_type": "password", "username": "alice", "password": PASSWORD}, headers=auth
    ).json()
    first = str(login["refresh_token"])
    rotated = request(url, {"grant_type": "refresh_token", "refresh_token": first}, headers=auth)
    assert rotated.status == 200
    replay = request(url, {"grant_type": "refresh_token", "refresh_token": first}, headers=auth)
    assert replay.json() == rotated.json()  # a lost answer is re-delivered, not re-minted
    second = str(rotated.json()["refresh_token"])
    assert second != first
    newest = request(url, {"grant_type": "refresh_token", "refresh_token": second}, headers=auth)
    assert newest.status == 200
    # `first` is now two generations old: reuse, and the whole session is revoked.
    reuse = request(url, {"grant_type": "refresh_token", "refresh_token": first}, headers=auth)
    assert (reuse.status, reuse.json()["error"]) == (400, "invalid_grant")
    with server.client(admin=False) as client:
        revoked = client.verify(str(newest.json()["access_token"])).result
    assert revoked == token_pb2.VERIFY_RESULT_REVOKED
    # a refresh token presented by another client is refused as a grant error
    other = make_client(server, "other", CLIENT_GRANTS)
    login = request(
        url, {"grant_type": "password", "username": "alice", "password": PASSWORD}, headers=auth
    ).json()
    stolen = request(
        url,
        {"grant_type": "refresh_token", "refresh_token": str(login["refresh_token"])},
        headers=basic("other", other),
    )
    assert (stolen.status, stolen.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("bad secret, Basic", 401, "invalid_client"),
        ("bad secret, form", 401, "invalid_client"),
        ("unknown client", 401, "invalid_client"),
        ("client credentials without a client", 401, "invalid_client"),
        ("wrong password", 400, "invalid_grant"),
        ("unknown refresh token", 400, "invalid_grant"),
        ("no grant_type", 400, "invalid_request"),
        ("repeated parameter", 400, "invalid_request"),
        ("Basic and form secret", 400, "invalid_request"),
        ("no refresh_token", 400, "invalid_request"),
        ("unknown grant type", 400, "unsupported_grant_type"),
        ("scope outside the policy", 400, "invalid_scope"),
        ("audience outside the policy", 400, "invalid_target"),
        ("grant not allowed to the client", 400, "unauthorized_client"),
    ],
)
def test_token_errors_follow_rfc_6749_section_5_2(
    server: ServerProcess, case: str, status: int, error: str
) -> None:
    secret = make_client(server, "app", CLIENT_GRANTS)
    service = make_client(server, "svc", (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,))
    make_principal(server)
    cc = [("grant_type", "client_credentials")]
    password = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]
    auth = basic("app", secret)
    cases: dict[str, tuple[list[tuple[str, str]], dict[str, str]]] = {
        "bad secret, Basic": (cc, basic("app", secret + "x")),
        "bad secret, form": ([*cc, ("client_id", "app"), ("client_secret", "cs_nope")], {}),
        "unknown client": (cc, basic("nobody", secret)),
        "client credentials without a client": (cc, {}),
        "wrong password": ([*password[:2], ("password", "wrong password!")], auth),
        "unknown refresh token": (
            [("grant_type", "refresh_token"), ("refresh_token", "rt_x")],
            auth,
        ),
        "no grant_type": ([("scope", "read")], auth),
        "repeated parameter": ([*cc, ("scope", "read"), ("scope", "write")], auth),
        "Basic and form secret": ([*cc, ("client_secret", secret)], auth),
        "no refresh_token": ([("grant_type", "refresh_token")], auth),
        "unknown grant type": ([("grant_type", "authorization_code"), ("code", "x")], auth),
        "scope outside the policy": ([*cc, ("scope", "admin")], auth),
        "audience outside the policy": ([*cc, ("audience", "payroll")], auth),
        "grant not allowed to the client": (password, basic("svc", service)),
    }
    form, headers = cases[case]
    answer = request(server.http + "/oauth2/token", form, headers=headers)
    assert answer.status == status, answer.body
    body = answer.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert answer.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="authority"'


def test_an_http_login_is_audited_like_a_grpc_one(server: ServerProcess) -> None:
    """The same events, with the caller's address and the request id of the call."""
    make_principal(server)
    answer = request(
        server.http + "/oauth2/token",
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers={"X-Request-ID": "req-http-1"},
    )
    assert answer.status == 200 and answer.headers["X-Request-ID"] == "req-http-1"
    with server.client() as client:
        client.issue_with_password("alice", PASSWORD)
        deadline = time.monotonic() + 10
        while True:
            events = list(client.list_audit_events(page_size=500).events)
            logins = [e for e in events if e.action in ("login.succeeded", "session.started")]
            if len(logins) >= 4:
                break
            assert time.monotonic() < deadline, [e.action for e in events]
            time.sleep(0.05)
    over_http = [e for e in logins if e.request_id == "req-http-1"]
    over_grpc = [e for e in logins if e.request_id != "req-http-1"]
    assert [e.action for e in over_http] == [e.action for e in over_grpc]
    assert [e.action for e in over_http] == ["login.succeeded", "session.started"]
    assert {e.source_address for e in logins} == {"127.0.0.1"}
    assert {e.target_type for e in over_http} == {e.target_type for e in over_grpc}
    # and the per-call log line and metrics, as for an RPC
    lines = server.rpc_lines()
    http_line = next(e for e in lines if e.get("method") == "POST /oauth2/token")
    assert http_line["request_id"] == "req-http-1" and http_line["code"] == "OK"
    assert http_line["peer"] == "127.0.0.1"
    exposition = request(server.http + "/metrics", method="GET").body.decode()
    assert 'authority_rpc_requests_total{code="OK",method="oauth2/token"} 1.0' in exposition


# -- revocation and introspection ------------------------------------------------------------


def test_revocation_follows_rfc_7009(server: ServerProcess) -> None:
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_principal(server)
    token_url, revoke_url = server.http + "/oauth2/token", server.http + "/oauth2/revoke"
    auth = basic("app", secret)
    login = request(
        token_url,
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        headers=auth,
    ).json()
    access, refresh = str(login["access_token"]), str(login["refresh_token"])
    service = request(token_url, {"grant_type": "client_credentials"}, headers=auth).json()
    # an access token, with a hint
    answer = request(
        revoke_url,
        {"token": str(service["access_token"]), "token_type_hint": "access_token"},
        headers=auth,
    )
    assert (answer.status, answer.body) == (200, b"")
    # a refresh token without a hint (and a wrong hint is ignored): the whole session ends
    answer = request(
        revoke_url, {"token": refresh, "token_type_hint": "access_token"}, headers=auth
    )
    assert answer.status == 200
    with server.client(admin=False) as client:
        assert client.verify(str(service["access_token"])).result == token_pb2.VERIFY_RESULT_REVOKED
        assert client.verify(access).result == token_pb2.VERIFY_RESULT_REVOKED
    again = request(
        token_url, {"grant_type": "refresh_token", "refresh_token": refresh}, headers=auth
    )
    assert again.json()["error"] == "invalid_grant"
    # unknown, malformed and repeated tokens: 200, nothing to say (RFC 7009 section 2.2)
    for token in ("not-a-token", "rt_unknown", refresh, "eyJ.e30.x"):
        assert request(revoke_url, {"token": token}).status == 200
    # a wrong secret is refused, a missing token is a bad request
    wrong = request(revoke_url, {"token": access}, headers=basic("app", "cs_wrong"))
    assert (wrong.status, wrong.json()["error"]) == (401, "invalid_client")
    assert wrong.headers["WWW-Authenticate"] == 'Basic realm="authority"'
    missing = request(revoke_url, {"token_type_hint": "access_token"}, headers=auth)
    assert (missing.status, missing.json()["error"]) == (400, "invalid_request")


def test_introspection_follows_rfc_7662(server: ServerProcess) -> None:
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_client(
        server,
        "public",
        (GRANTS.GRANT_TYPE_PASSWORD, GRANTS.GRANT_TYPE_REFRESH_TOKEN),
        confidential=False,
    )
    principal = make_principal(server)
    token_url, introspect_url = server.http + "/oauth2/token", server.http + "/oauth2/introspect"
    auth = basic("app", secret)
    login = request(
        token_url,
        {"grant_type": "password", "username": "alice", "password": PASSWORD, "audience": "orders"},
        headers=auth,
    ).json()
    access = str(login["access_token"])
    answer = request(introspect_url, {"token": access}, headers=auth)
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    claims = payload(access)
    assert body == {
        "active": True,
        "token_type": "Bearer",
        "client_id": "app",
        "sub": principal,
        "aud": "orders",  # not the default audience: introspection accepts any of ours
        "iss": server.http,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["nbf"],
        "jti": claims["jti"],
        "scope": "read",
    }
    inactive = {"active": False}
    # a refresh token, garbage, a revoked token: inactive
    for token in (str(login["refresh_token"]), "garbage", access[:-4] + "AAAA"):
        assert request(introspect_url, {"token": token}, headers=auth).json() == inactive
    with server.client() as admin:
        admin.revoke(access_token=access)
    assert request(introspect_url, {"token": access}, headers=auth).json() == inactive
    # only authenticated confidential clients may ask
    for form, headers in (
        ({"token": access}, {}),
        ({"token": access, "client_id": "public"}, {}),
        ({"token": access}, basic("app", "cs_wrong")),
        ({"token": access}, {"Authorization": "Bearer " + access}),
    ):
        refused = request(introspect_url, form, headers=headers)
        assert (refused.status, refused.json()["error"]) == (401, "invalid_client"), form
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="authority"'
    assert request(introspect_url, {}, headers=auth).json()["error"] == "invalid_request"
