"""Token exchange cannot mint security claims: extra claims are an allow-list registered on
the client, and security-sensitive names need a separate, explicit registration."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from authority_client import AuthorityClient
from google.protobuf.json_format import MessageToDict

from authority.v1 import admin_pb2, token_pb2
from tests.integration.server import ServerProcess

Code = grpc.StatusCode
VALID = token_pb2.VERIFY_RESULT_VALID
REFUSED = (Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED)
PASSWORD = "violet tangerine orbit 42"

# The names seen minted before, the rest of the security-relevant IANA JWT claims, and
# spellings a relying party that folds case or width would read as the same claim.
SENSITIVE = [
    "cnf", "act", "may_act", "azp", "acr", "amr", "auth_time", "roles", "groups",
    "entitlements", "typ", "nonce", "at_hash", "c_hash", "sub_jwk", "events", "txn",
    "email_verified", "phone_number_verified", "scp", "permissions", "kid", "x5c", "jwk",
    "ROLES", "Groups", "ａｃｔ", "Email_Verified",
]  # fmt: skip
REGISTERED = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "client_id", "scope"]
UNREGISTERED = ["department", "tier", "x-custom", "level", "Department"]


def _code(call: Callable[[], object]) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        assert "Traceback" not in (error.details() or "")
        return error.code()
    return None


def _gateway(admin: AuthorityClient, **claims: list[str]) -> str:
    response = admin.create_client(
        admin_pb2.Client(
            id="gateway",
            confidential=True,
            grant_types=[admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE],
            audiences=["default"],
            **claims,
        )
    )
    return response.client_secret


def test_unregistered_and_sensitive_claims_are_never_minted(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    with server.client() as admin:
        admin.create_principal("alice", PASSWORD)
        secret = _gateway(admin, allowed_claims=["department"])
        minted = []
        for name in SENSITIVE + REGISTERED + UNREGISTERED[1:]:
            code = _code(
                lambda n=name: admin.exchange_token("gateway", secret, "alice", claims={n: "x"})
            )
            if code not in REFUSED:
                minted.append((name, code))
        assert minted == []
        # Smuggling a refused claim beside an allowed one is refused as a whole.
        code = _code(
            lambda: admin.exchange_token(
                "gateway", secret, "alice", claims={"department": "x", "roles": ["admin"]}
            )
        )
        assert code is Code.PERMISSION_DENIED
        pair = admin.exchange_token("gateway", secret, "alice", claims={"department": "sales"})
        answer = admin.verify(pair.access_token)
        assert answer.result == VALID
        assert MessageToDict(answer.claims.extra) == {"department": "sales"}


def test_sensitive_claims_cannot_be_registered_as_ordinary_ones(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    with server.client() as admin:
        for name in SENSITIVE + REGISTERED:
            code = _code(lambda n=name: _gateway(admin, allowed_claims=[n]))
            assert code is Code.INVALID_ARGUMENT, name
        for name in [*REGISTERED, "ISS", "Sub"]:
            code = _code(lambda n=name: _gateway(admin, allowed_sensitive_claims=[n]))
            assert code is Code.INVALID_ARGUMENT, name
        secret = _gateway(admin)
        for name in SENSITIVE:
            code = _code(lambda n=name: admin.set_client_allowed_claims("gateway", [n]))
            assert code is Code.INVALID_ARGUMENT, name
        assert admin.get_client("gateway").allowed_claims == []
        admin.create_principal("alice", PASSWORD)
        code = _code(lambda: admin.exchange_token("gateway", secret, "alice", claims={"act": {}}))
        assert code is Code.PERMISSION_DENIED


def test_a_sensitive_claim_works_only_with_the_explicit_registration(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    with server.client() as admin:
        admin.create_principal("alice", PASSWORD)
        secret = _gateway(admin)
        claims = {"roles": ["reader"], "tier": "gold"}
        refused = _code(lambda: admin.exchange_token("gateway", secret, "alice", claims=claims))
        assert refused is Code.PERMISSION_DENIED

        client = admin.set_client_allowed_claims("gateway", ["tier"], ["roles"])
        assert list(client.allowed_claims) == ["tier"]
        assert list(client.allowed_sensitive_claims) == ["roles"]
        pair = admin.exchange_token("gateway", secret, "alice", claims=claims)
        answer = admin.verify(pair.access_token)
        assert answer.result == VALID
        assert MessageToDict(answer.claims.extra) == claims
        # Registering `roles` does not register its other spellings, nor `groups`.
        for other in ({"Roles": ["admin"]}, {"groups": ["admin"]}):
            code = _code(lambda o=other: admin.exchange_token("gateway", secret, "alice", claims=o))
            assert code is Code.PERMISSION_DENIED

        admin.set_client_allowed_claims("gateway", ["tier"], [])
        code = _code(lambda: admin.exchange_token("gateway", secret, "alice", claims=claims))
        assert code is Code.PERMISSION_DENIED
