"""A lone UTF-16 surrogate in a token we signed, against a real server.

Python's json reads "\\ud800" (or the bytes 0xED 0xA0 0x80) as a str that no UTF-8 system
can carry: a Verify answer holding it could not be built (the caller got an internal
error), ext_authz allowed it. RFC 7493 (I-JSON) forbids it, so every verifier now
answers MALFORMED; and no request can make the authority sign one. The tokens here are
signed with the server's own key (unwrapped from its store), as if it had minted them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import grpc
from authority_client import LocalVerifier

from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.v1 import admin_pb2, token_pb2
from tests.client.support import KEK, SigningKey, server_signing_keys, sign_raw
from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import basic, request

ISSUER = "https://auth.example.test"
PASSWORD = "a perfectly fine passphrase"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
VALID = token_pb2.VERIFY_RESULT_VALID
MALFORMED = token_pb2.VERIFY_RESULT_MALFORMED
GRANTS = admin_pb2.GrantType
IDENTITY = (lambda b: b, lambda b: b)


def _decode(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _start(start_server: Callable[..., ServerProcess]) -> tuple[ServerProcess, str]:
    """A server and the secret of its confidential client ``gateway``, which logs users in,
    introspects and exchanges, with the extra claim ``team``."""
    server = start_server(AUTHORITY_KEK=KEK, AUTHORITY_ISSUER=ISSUER)
    with server.client() as admin:
        admin.create_principal("alice", PASSWORD)
        secret = admin.create_client(
            admin_pb2.Client(
                id="gateway",
                confidential=True,
                grant_types=[
                    GRANTS.GRANT_TYPE_PASSWORD,
                    GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,
                    GRANTS.GRANT_TYPE_TOKEN_EXCHANGE,
                ],
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
                allowed_claims=["team"],
            )
        ).client_secret
    return server, secret


def _signing_key(server: ServerProcess, token: str) -> SigningKey:
    """The server's private key that signed ``token``: forging with it is minting."""
    kid = _decode(token.partition(".")[0])["kid"]
    (key,) = [k for k in server_signing_keys(server.data_dir) if k.kid == kid]
    return key


def _login(server: ServerProcess, secret: str) -> str:
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    answer = request(server.http + "/oauth2/token", form, headers=basic("gateway", secret))
    assert answer.status == 200, answer.body
    return str(json.loads(answer.body)["access_token"])


def _resigned(signing: SigningKey, token: str, payload: bytes | None = None, **extra: Any) -> str:
    """``token`` with ``extra`` claims (or exactly ``payload``), signed again with the
    server's key under the server's own header."""
    header, body = (_decode(segment) for segment in token.split(".")[:2])
    data = payload if payload is not None else json.dumps({**body, **extra}).encode()
    return sign_raw(signing, header, data)


def _ext_authz_code(server: ServerProcess, token: str) -> int:
    check = external_auth_pb2.CheckRequest()
    check.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    with server.channel() as channel:
        answer = external_auth_pb2_grpc.AuthorizationStub(channel).Check(check, timeout=10)
    return int(answer.status.code)


def _local(server: ServerProcess, tokens: list[str]) -> list[tuple[int, str]]:
    async def run() -> list[tuple[int, str]]:
        verifier = LocalVerifier.for_authority(
            server.target,
            issuer=ISSUER,
            audience="default",
            jwks_url=f"{server.http}/.well-known/jwks.json",
            revocations="none",
        )
        async with verifier:
            return [(int(v.reason), v.detail) for v in [await verifier.verify(t) for t in tokens]]

    return asyncio.run(run())


def _introspected(server: ServerProcess, secret: str, token: str) -> dict[str, Any]:
    url = server.http + "/oauth2/introspect"
    answer = request(url, {"token": token}, headers=basic("gateway", secret))
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    assert isinstance(body, dict)
    return body


def test_a_signed_lone_surrogate_is_malformed_to_every_verifier(
    start_server: Callable[..., ServerProcess],
) -> None:
    server, secret = _start(start_server)
    minted = _login(server, secret)
    signing = _signing_key(server, minted)
    body = base64.urlsafe_b64decode(minted.split(".")[1] + "==")
    hostile = {
        "an escaped lone surrogate": _resigned(signing, minted, team="\ud800"),
        "in a claim name": _resigned(signing, minted, **{"\udfff": 1}),
        "deep in act": _resigned(signing, minted, act={"sub": "p_x", "act": {"sub": ["\udc00"]}}),
        "a surrogate's own bytes": _resigned(
            signing, minted, payload=body[:-1] + b',"team":"\xed\xa0\x80"}'
        ),
    }
    fine = {
        "minted": minted,
        "an emoji (an escaped pair)": _resigned(signing, minted, team="\U0001f600"),
    }
    with server.client() as client:
        for name, token in fine.items():  # the forging itself is sound
            assert client.verify(token).result == VALID, name
            assert _ext_authz_code(server, token) == grpc.StatusCode.OK.value[0], name
            assert _introspected(server, secret, token)["active"] is True, name
        for name, token in hostile.items():
            answer = client.verify(token)  # an answer, not an internal error
            assert answer.result == MALFORMED, (name, answer)
            assert "lone UTF-16 surrogate" in answer.detail, (name, answer.detail)
            assert not answer.HasField("claims"), name
            code = _ext_authz_code(server, token)
            assert code == grpc.StatusCode.UNAUTHENTICATED.value[0], name
            assert _introspected(server, secret, token) == {"active": False}, name
    local = _local(server, [*fine.values(), *hostile.values()])
    assert [reason for reason, _ in local[: len(fine)]] == [VALID] * len(fine)
    for name, (reason, detail) in zip(hostile, local[len(fine) :], strict=True):
        assert reason == MALFORMED and "lone UTF-16 surrogate" in detail, (name, detail)


def test_token_exchange_never_signs_a_lone_surrogate(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Exchange copies claims into a token we sign: a subject token's ``act`` chain
    (RFC 8693) and, in the deprecated form, the caller's own claims."""
    server, secret = _start(start_server)
    minted = _login(server, secret)
    subject = _resigned(_signing_key(server, minted), minted, act={"sub": "p_\ud800"})
    form = {"grant_type": EXCHANGE, "subject_token": subject, "subject_token_type": ACCESS}
    answer = request(server.http + "/oauth2/token", form, headers=basic("gateway", secret))
    assert answer.status == 400, answer.body
    assert json.loads(answer.body)["error"] == "invalid_grant"
    with server.client(admin=False) as client:
        try:
            client.exchange("gateway", secret, subject)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED, error
            assert "lone UTF-16 surrogate" in (error.details() or "")
        else:
            raise AssertionError("a subject token holding a lone surrogate was exchanged")

    # The deprecated exchange's claims: a protobuf string must be UTF-8, so a surrogate can
    # only be sent as its own bytes, by hand: refused before any handler, not signed.
    grant = token_pb2.TokenExchangeGrant(client_id="gateway", client_secret=secret, subject="alice")
    grant.claims.update({"team": "QQQ"})
    sound = token_pb2.IssueRequest(token_exchange=grant).SerializeToString()
    issue = "/authority.v1.TokenService/Issue"
    with server.channel() as channel:
        call = channel.unary_unary(issue, *IDENTITY)
        issued = token_pb2.IssueResponse.FromString(call(sound, timeout=10))
        assert issued.tokens.access_token  # the hand-built request is a sound one
        try:
            call(sound.replace(b"QQQ", b"\xed\xa0\x80"), timeout=10)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
            assert "not valid UTF-8" in (error.details() or ""), error.details()
        else:
            raise AssertionError("a claim holding a surrogate's bytes was accepted")
