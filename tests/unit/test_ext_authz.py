"""The ext_authz Check decision, message by message, over a real TokenVerifier.

These pin the header handling (overwrite, remove, challenges) that an upstream relies on;
tests/envoy proves the same through a real Envoy.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import grpc
import pytest

from authority.api import ext_authz
from authority.crypto import generate_private_key, public_jwk
from authority.domain.clock import ManualClock
from authority.domain.errors import Unavailable
from authority.domain.keys import Algorithm
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.envoy.config.core.v3 import base_pb2
from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.tokens.jws import SigningKey, VerificationKey, sign
from authority.tokens.verifier import TokenVerifier

ISSUER = "https://auth.example.test"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class Fixture:
    def __init__(self) -> None:
        self.clock = ManualClock()
        private = generate_private_key(Algorithm.EDDSA)
        kid = public_jwk(private, Algorithm.EDDSA)["kid"]
        self.signing = SigningKey(kid, Algorithm.EDDSA, private)
        self.keys = {kid: VerificationKey(kid, Algorithm.EDDSA, private.public_key())}
        self.revocations = RevocationSet()
        self.verifier = TokenVerifier(
            keys=lambda: self.keys,
            issuer=ISSUER,
            default_audience="api",
            leeway=0.0,
            max_token_bytes=4096,
            revocations=self.revocations,
            clock=self.clock,
        )
        self.servicer = ext_authz.AuthorizationServicer(verifier=self.verifier)

    def token(self, **overrides: Any) -> str:
        now = int(self.clock.timestamp())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "p_alice",
            "aud": "api",
            "exp": now + 600,
            "iat": now,
            "jti": "j1",
            "sid": "s1",
            "client_id": "web",
            "scope": "read write",
        }
        claims.update(overrides)
        return sign({k: v for k, v in claims.items() if v is not None}, self.signing)

    def check(
        self,
        headers: dict[str, str] | None = None,
        extensions: dict[str, str] | None = None,
        *,
        raw: bool = False,
    ) -> Any:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        for name, value in (headers or {}).items():
            if raw:  # Envoy with encode_raw_headers: true
                http.header_map.headers.add(key=name, raw_value=value.encode())
            else:
                http.headers[name] = value
        request.attributes.context_extensions.update(extensions or {})
        return self.servicer.check(request)


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _set_headers(response: Any) -> dict[str, str]:
    options = response.ok_response.headers
    assert all(option.append_action == OVERWRITE for option in options)
    return {option.header.key: option.header.value for option in options}


def _denied_headers(response: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in response.denied_response.headers}


def test_a_valid_token_sets_the_identity_headers(fx: Fixture) -> None:
    response = fx.check(_bearer(fx.token()))
    assert response.status.code == grpc.StatusCode.OK.value[0]
    assert response.WhichOneof("http_response") == "ok_response"
    assert _set_headers(response) == {
        "x-authority-subject": "p_alice",
        "x-authority-client-id": "web",
        "x-authority-scope": "read write",
        "x-authority-session-id": "s1",
    }
    assert list(response.ok_response.headers_to_remove) == []


def test_client_supplied_identity_headers_are_overwritten_or_removed(fx: Fixture) -> None:
    token = fx.token(sid=None)  # client credentials: no session
    headers = {
        **_bearer(token),
        "x-authority-subject": "admin",
        "x-authority-session-id": "forged",
        "x-authority-role": "superuser",
        "X-Authority-Tenant": "other",
        "x-authorityish": "kept",
        # CGI/WSGI upstreams fold "_" into "-": these would read as identity headers.
        "x_authority_scope": "admin",
        "X_Authority_Subject": "p_forged",
        "x-authority_client-id": "svc",
        "x_authorityish": "kept",
    }
    response = fx.check(headers)
    set_headers = _set_headers(response)
    assert set_headers["x-authority-subject"] == "p_alice"
    assert "x-authority-session-id" not in set_headers
    assert sorted(response.ok_response.headers_to_remove) == [
        "x-authority-role",
        "x-authority-session-id",
        "x-authority-tenant",
        "x-authority_client-id",
        "x_authority_scope",
        "x_authority_subject",
    ]


def test_no_bearer_credential_gets_a_bare_challenge(fx: Fixture) -> None:
    for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"}):
        response = fx.check(headers)
        assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert response.denied_response.status.code == 401
        assert _denied_headers(response)["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("case", "description"),
    [
        ("expired", "the token has expired"),
        ("tampered", "the signature does not match"),
        ("revoked", "the token has been revoked"),
        ("wrong audience", "the token is not for this audience"),
        ("garbage", "not a compact JWS (three dot-separated parts)"),
        ("empty", "not a compact JWS (three dot-separated parts)"),
    ],
)
def test_invalid_tokens_get_401_with_the_reason(fx: Fixture, case: str, description: str) -> None:
    token = fx.token()
    if case == "expired":
        fx.clock.advance(timedelta(seconds=601))
    elif case == "tampered":
        head, _, signature = token.split(".")
        forged = fx.token(sub="p_mallory").split(".")[1]
        token = f"{head}.{forged}.{signature}"
    elif case == "revoked":
        now = fx.clock.timestamp()
        fx.revocations.add(Revocation(RevocationKind.SESSION, "s1", now, now + 600))
    elif case == "wrong audience":
        token = fx.token(aud="orders")
    elif case == "garbage":
        token = "not-a-token"
    elif case == "empty":
        token = ""
    response = fx.check(_bearer(token))
    assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert response.denied_response.status.code == 401
    headers = _denied_headers(response)
    assert headers["www-authenticate"] == (
        f'Bearer error="invalid_token", error_description="{description}"'
    )
    assert headers["cache-control"] == "no-store"
    body = json.loads(response.denied_response.body)
    assert body["error"] == "invalid_token"
    assert body["error_description"] == description


def test_the_scheme_is_case_insensitive(fx: Fixture) -> None:
    response = fx.check({"authorization": f"bearer  {fx.token()}"})
    assert response.WhichOneof("http_response") == "ok_response"


def test_the_route_names_the_audiences(fx: Fixture) -> None:
    orders = fx.token(aud=["orders", "billing"])
    accepted = fx.check(_bearer(orders), {"audience": "inventory orders"})
    assert accepted.WhichOneof("http_response") == "ok_response"
    # The route's audiences replace the default: an "api" token does not pass here.
    refused = fx.check(_bearer(fx.token()), {"audience": "orders"})
    assert refused.denied_response.status.code == 401


def test_a_missing_scope_gets_403_naming_the_required_scopes(fx: Fixture) -> None:
    token = fx.token(scope="read")
    assert fx.check(_bearer(token), {"scopes": "read"}).WhichOneof("http_response") == (
        "ok_response"
    )
    response = fx.check(_bearer(token), {"scopes": "read admin"})
    assert response.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert response.denied_response.status.code == 403
    assert _denied_headers(response)["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="read admin",'
        ' error_description="the token lacks the scope admin"'
    )
    # An invalid token is a 401 even where a scope is also missing.
    fx.clock.advance(timedelta(seconds=601))
    assert fx.check(_bearer(token), {"scopes": "admin"}).denied_response.status.code == 401


def test_raw_header_map_is_read_too(fx: Fixture) -> None:
    headers = {**_bearer(fx.token()), "x-authority-subject": "admin"}
    response = fx.check(headers, raw=True)
    assert _set_headers(response)["x-authority-subject"] == "p_alice"


def test_client_text_in_the_description_cannot_break_the_challenge(fx: Fixture) -> None:
    import base64  # noqa: PLC0415

    header = base64.urlsafe_b64encode(b'{"alg": "x\\", error=\\"ok"}').rstrip(b"=").decode()
    response = fx.check(_bearer(f"{header}.e30.c2ln"))
    challenge = _denied_headers(response)["www-authenticate"]
    value = challenge.split('error_description="', 1)[1]
    assert value.endswith('"')
    assert '"' not in value[:-1] and "\\" not in value


async def test_check_is_served_over_grpc(fx: Fixture) -> None:
    server = grpc.aio.server()
    ext_authz.add_to_server(fx.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            request = external_auth_pb2.CheckRequest()
            request.attributes.request.http.headers.update(_bearer(fx.token()))
            response = await stub.Check(request, timeout=5)
    finally:
        await server.stop(None)
    assert _set_headers(response)["x-authority-subject"] == "p_alice"
    assert ext_authz.SERVICE_NAME == "envoy.service.auth.v3.Authorization"


class _Failing:
    """A verifier that raises: Check's guard, not the verifier, decides the status."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def verify(self, token: str, audiences: Any = ()) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "details"),
    [
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL, "internal error"),
        (Unavailable("the key ring is not loaded yet"), grpc.StatusCode.UNAVAILABLE, "key ring"),
    ],
)
async def test_a_failing_check_gets_a_status_not_a_stack_trace(
    fx: Fixture, error: Exception, code: grpc.StatusCode, details: str
) -> None:
    servicer = ext_authz.AuthorizationServicer(verifier=_Failing(error))  # type: ignore[arg-type]
    server = grpc.aio.server()
    ext_authz.add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            request = external_auth_pb2.CheckRequest()
            request.attributes.request.http.headers.update(_bearer(fx.token()))
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Check(request, timeout=5)
    finally:
        await server.stop(None)
    assert failed.value.code() is code
    assert details in (failed.value.details() or "")
    assert "secret" not in (failed.value.details() or "")


def test_a_repeated_tokens_answer_is_the_one_built_afresh(fx: Fixture) -> None:
    """The answer memo (per claims object) changes no byte of any answer."""
    token = fx.token()
    for extra in ({}, {"x-authority-scope": "forged", "x_authority_session_id": "s"}, {}):
        headers = {"authorization": f"Bearer {token}", **extra}
        first = fx.check(headers)
        ext_authz._ANSWERS.clear()
        afresh = fx.check(headers)
        again = fx.check(headers)
        assert afresh.HasField("ok_response")
        assert first.SerializeToString() == afresh.SerializeToString()
        assert again.SerializeToString() == afresh.SerializeToString()
