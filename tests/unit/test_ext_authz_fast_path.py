"""ext_authz Check's fast path (one pass over the header names, the route requirements
and the answer remembered) gives byte-identical answers to the reference reading: the
full lower-cased map of ``request_headers`` and ``is_identity_header``; and revocation,
expiry and key removal still win over a remembered answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest

from authority.api import ext_authz
from authority.domain.call_metadata import bearer_credential
from authority.domain.revocation import Revocation, RevocationKind
from authority.envoy.service.auth.v3 import external_auth_pb2
from tests.unit.test_ext_authz import Fixture


def _request(headers: list[tuple[str, str]], extensions: dict[str, str], raw: bool) -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    for name, value in headers:
        if raw:
            http.header_map.headers.add(key=name, raw_value=value.encode())
        else:
            http.headers[name] = value
    request.attributes.context_extensions.update(extensions)
    return external_auth_pb2.CheckRequest.FromString(request.SerializeToString())


def _reference(fx: Fixture, request: Any) -> bytes:
    """The decision as the handler made it before the fast path, from the full map."""
    headers = ext_authz.request_headers(request)
    extensions = request.attributes.context_extensions
    audiences = str(extensions.get("audience", "")).split()
    required = str(extensions.get("scopes", "")).split()
    token = bearer_credential(headers.get("authorization", ""))
    if token is None:
        answer = ext_authz.unauthenticated(None)
    else:
        verdict = fx.verifier.verify(token, audiences)
        if not verdict.valid or verdict.claims is None:
            answer = ext_authz.unauthenticated(verdict)
        else:
            missing = [s for s in required if s not in verdict.claims.scope]
            identity = frozenset(n for n in headers if ext_authz.is_identity_header(n))
            answer = (
                ext_authz.insufficient_scope(required, missing)
                if missing
                else ext_authz.build_allowed(verdict.claims, identity)
            )
    data: bytes = answer.SerializeToString()
    return data


def _sent(fx: Fixture, request: Any) -> bytes:
    """The bytes Check sends: the answer through the method's response serializer."""
    return ext_authz.check_response_bytes(fx.servicer.check(request))


def _header_sets(token: str) -> list[list[tuple[str, str]]]:
    bearer = ("authorization", f"Bearer {token}")
    return [
        [bearer],
        [(":path", "/a"), ("user-agent", "x"), bearer],
        [bearer, ("x-authority-subject", "admin"), ("x-authority-role", "root")],
        [bearer, ("X-Authority-Tenant", "t"), ("x_authority_scope", "s"), ("x-authorityish", "k")],
        [
            bearer,
            ("X_Authority_Subject", "p"),
            ("x-authority_client-id", "c"),
            ("x_authorityish", "k"),
        ],
        [bearer, ("x-authority-session-id", "forged"), ("x-authority-scope", "admin")],
        [("Authorization", "Basic Zm9vOmJhcg=="), bearer],  # names that collide when lowered
        [bearer, ("AUTHORIZATION", f"Bearer {token}x")],
        [("authorization", "Basic Zm9vOmJhcg==")],
        [],
        [("authorization", "Bearer not-a-token"), ("x-authority-subject", "a")],
        # lower-cased names that only contain the prefix, or that lower-case to a
        # different string than they look like (Kelvin sign, dotted capital I)
        [bearer, ("my-x-authority-subject", "a"), ("x-authorities", "b")],
        [(":authority", "api.example"), bearer, ("x_authority_subject", "p")],
        [bearer, ("x-authority-\u212aey", "k"), ("x-\u212a", "k")],
        [("authorizat\u0130on", "Bearer x"), bearer, ("\u03a3", "s")],
        [(f"authorization\n{n}", "Bearer x") for n in ("x-authority-subject", "")] + [bearer],
    ]


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize(
    "extensions",
    [{}, {"audience": "api"}, {"audience": "orders"}, {"scopes": "read"}, {"scopes": "admin"}],
)
def test_the_fast_path_answers_byte_for_byte_as_the_reference(
    raw: bool, extensions: dict[str, str]
) -> None:
    fx = Fixture()
    for token in (fx.token(), fx.token(sid=None), fx.token(scope=""), fx.token(team="\ud800")):
        for headers in _header_sets(token):
            request = _request(headers, extensions, raw)
            expected = _reference(fx, request)
            first = _sent(fx, request)  # built (or remembered)
            again = _sent(fx, request)  # remembered
            ext_authz._ANSWERS.clear()
            ext_authz._ANSWER_BYTES.clear()
            ext_authz._ROUTES.clear()
            afresh = _sent(fx, request)
            assert first == again == afresh == expected, (headers, extensions, raw)


def test_remembered_answers_follow_the_identity_headers_sent() -> None:
    ext_authz._ANSWERS.clear()
    ext_authz._ANSWER_BYTES.clear()
    fx = Fixture()
    token = fx.token(sid=None)
    plain = _request([("authorization", f"Bearer {token}")], {}, False)
    forged = _request(
        [("authorization", f"Bearer {token}"), ("x-authority-session-id", "s")], {}, False
    )
    for request in (plain, forged, plain, forged):
        assert _sent(fx, request) == _reference(fx, request)
    removed = fx.servicer.check(forged).ok_response.headers_to_remove
    assert list(removed) == ["x-authority-session-id"]
    # one remembered answer for these claims, and only its bytes are kept
    assert len(ext_authz._ANSWERS) == len(ext_authz._ANSWER_BYTES) == 1


@pytest.mark.parametrize("change", ["revoked", "expired", "key removed"])
def test_revocation_expiry_and_key_removal_win_over_a_remembered_answer(change: str) -> None:
    fx = Fixture()
    request = _request([("authorization", f"Bearer {fx.token()}")], {}, False)
    assert fx.servicer.check(request).HasField("ok_response")
    assert fx.servicer.check(request).HasField("ok_response")  # remembered
    if change == "revoked":
        now = fx.clock.timestamp()
        fx.revocations.add(Revocation(RevocationKind.SESSION, "s1", now, now + 600))
    elif change == "expired":
        fx.clock.advance(timedelta(seconds=601))
    else:
        fx.keys.clear()
    response = fx.servicer.check(request)
    assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert response.denied_response.status.code == 401


def test_a_signed_lone_surrogate_is_denied_on_every_sighting() -> None:
    """A token we signed whose claims hold a lone UTF-16 surrogate (not I-JSON) is
    malformed: denied, never allowed with claims no header or protobuf can carry."""
    fx = Fixture()
    token = fx.token(team="\udfff")
    request = _request([("authorization", f"Bearer {token}")], {}, False)
    for _ in range(3):
        response = fx.servicer.check(request)
        assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert response.denied_response.status.code == 401
        assert response.SerializeToString() == _reference(fx, request)
