"""Parity with a REAL authority process: for a corpus of tokens it minted (and forgeries,
some signed with its own key unwrapped from its store), the local verdict equals the
server's ``Verify`` verdict, for each signing algorithm. Both run the same JOSE core
(authority.jose); what this proves end to end is the rest: the keys as published over
HTTP and gRPC, the verdicts and claims as the RPC encodes them, key compromise and
revocation as each side learns of them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from authority_client.jwks import GrpcJwksSource, HttpJwksSource, JwksCache
from authority_client.revocation import CallbackRevocations, WatchedRevocations
from authority_client.verifier import LocalVerifier

from authority.v1 import token_pb2 as pb
from tests.client.support import (
    ISSUER,
    KEK,
    REVOCATION_SERVICE,
    SigningKey,
    b64,
    forge,
    server_signing_keys,
    sign_raw,
)
from tests.integration.server import ADMIN_TOKEN, ServerProcess

# Reading revocations needs a credential; the admin credential is one.
READER = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
needs_revocation_service = pytest.mark.skipif(
    not REVOCATION_SERVICE,
    reason="authority.api.revocation_service (the server side of RevocationService) is not"
    " importable yet",
)


@pytest.fixture(scope="module", params=["EdDSA", "ES256", "RS256"])
def authority(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, SigningKey]]:
    data = tmp_path_factory.mktemp(f"authority-{request.param}")
    server = ServerProcess(
        data,
        {
            "AUTHORITY_KEK": KEK,
            "AUTHORITY_ISSUER": ISSUER,
            "AUTHORITY_ALGORITHM": request.param,
            "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
            "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
        },
    ).start()
    try:
        (signing,) = [k for k in server_signing_keys(data) if k.algorithm == request.param]
        with server.client() as client:  # forging with it is forging with the server's key
            published = {k["kid"] for k in json.loads(client.jwks().jwks_json)["keys"]}
        assert signing.kid in published
        yield server, signing
    finally:
        server.kill()


def _login(server: ServerProcess, name: str = "alice") -> str:
    with server.client() as client:
        try:
            client.create_principal(name, PASSWORD)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        return client.issue_with_password(name, PASSWORD).access_token


def _decode(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def corpus(server: ServerProcess, signing: SigningKey) -> dict[str, tuple[str, list[str]]]:
    """name -> (token, audiences asked for)."""
    token = _login(server)
    h, p, s = token.split(".")
    header, payload = _decode(h), _decode(p)
    now = int(time.time())
    with server.client() as client:
        jwk = json.loads(client.jwks().jwks_json)["keys"][0]
    secret = base64.urlsafe_b64decode((jwk.get("x") or jwk["n"]) + "==")
    h_hs = b64(json.dumps({**header, "alg": "HS256"}).encode())
    mac = hmac.new(secret, f"{h_hs}.{p}".encode(), hashlib.sha256).digest()
    other_alg = "ES256" if signing.algorithm != "ES256" else "EdDSA"

    def signed(**changes: Any) -> str:
        body = {k: v for k, v in {**payload, **changes}.items() if v is not None}
        return sign_raw(signing, header, json.dumps(body).encode())

    def signed_header(**changes: Any) -> str:
        head = {k: v for k, v in {**header, **changes}.items() if v is not None}
        return sign_raw(signing, head, json.dumps(payload).encode())

    return {
        "valid (minted)": (token, []),
        "valid, audience named": (token, ["default", "billing"]),
        "valid (forged with the server's key), extra claims": (signed(team="blue"), []),
        "valid, audience list": (signed(aud=["billing", "default"]), ["default"]),
        "expired": (signed(exp=now - 3600), []),
        "expired within the leeway": (signed(exp=now - 5), []),
        "nbf in the future": (signed(nbf=now + 3600), []),
        "iat in the future": (signed(iat=now + 3600), []),
        "nbf within the leeway": (signed(nbf=now + 5), []),
        "wrong issuer": (signed(iss="https://evil.example"), []),
        "wrong audience": (token, ["billing"]),
        "alg none": (forge({**header, "alg": "none"}, payload, b""), []),
        "HS256 with the public key": (f"{h_hs}.{p}.{b64(mac)}", []),
        "header alg differs from the key's": (signed_header(alg=other_alg), []),
        "unknown kid": (forge({**header, "kid": "not-a-published-key"}, payload), []),
        "typ JWT": (signed_header(typ="JWT"), []),
        "no typ": (signed_header(typ=None), []),
        "crit": (signed_header(crit=["exp"]), []),
        "tampered": (f"{h}.{b64(json.dumps({**payload, 'sub': 'admin'}).encode())}.{s}", []),
        "signature of another token": (f"{h}.{p}.{_login(server, 'bob').split('.')[2]}", []),
        "padded": (f"{h}.{p}.{s}==", []),
        "non-ASCII payload": (f"{h}.{p}é.{s}", []),
        "garbage": ("not a token at all", []),
        "empty": ("", []),
        "two parts": (f"{h}.{p}", []),
        "oversized": (token + "A" * 9000, []),
        "no jti": (signed(jti=None), []),
        "exp a string": (signed(exp="tomorrow"), []),
        "scope a list": (signed(scope=["a", "b"]), []),
        "aud empty": (signed(aud=[]), []),
    }


def _verifier(server: ServerProcess, source: str, **options: Any) -> LocalVerifier:
    jwks = (
        HttpJwksSource(server.http + "/.well-known/jwks.json")
        if source == "http"
        else GrpcJwksSource(server.target)
    )
    options.setdefault("issuer", ISSUER)
    return LocalVerifier(JwksCache(jwks), audience="default", **options)


@pytest.mark.parametrize("source", ["http", "grpc"])
async def test_local_verdicts_equal_the_servers(
    authority: tuple[ServerProcess, SigningKey], source: str
) -> None:
    server, signing = authority
    tokens = await asyncio.to_thread(corpus, server, signing)
    verifier = _verifier(server, source)
    try:
        with server.client() as client:
            for name, (token, audience) in tokens.items():
                remote = await asyncio.to_thread(client.verify, token, audience=audience)
                local = await verifier.verify(token, audience or None)
                assert local.reason == remote.result, (
                    f"{name}: local {local.reason_name} ({local.detail}), "
                    f"server {pb.VerifyResult.Name(remote.result)} ({remote.detail})"
                )
                if remote.result == pb.VERIFY_RESULT_VALID:
                    assert local.claims is not None
                    got, want = local.claims, remote.claims
                    assert (got.subject, got.token_id, got.session_id, got.key_id) == (
                        want.subject,
                        want.token_id,
                        want.session_id,
                        want.key_id,
                    )
                    assert list(got.audience) == list(want.audience)
                    assert got.expires_at == want.expires_at.seconds
                    assert dict(got.extra) == dict(want.extra.items())
        # Every distinct reason the corpus is meant to exercise was reached.
        reached = {(await verifier.verify(t, a or None)).reason_name for t, a in tokens.values()}
        assert len(reached) >= 11, reached
    finally:
        await verifier.aclose()


async def test_a_compromised_key_is_refused_after_the_refetch(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    verifier = _verifier(server, "http", issuer=server.http)
    try:
        token = await asyncio.to_thread(_login, server, "carol")
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        assert (await verifier.verify(token)).valid
        with server.client() as client:
            await asyncio.to_thread(client.compromise_key, kid, "test")
            assert client.verify(token).result == pb.VERIFY_RESULT_UNKNOWN_KEY
        await verifier.jwks.refresh()  # what max-age (or the next new kid) would do
        assert (await verifier.verify(token)).reason == pb.VERIFY_RESULT_UNKNOWN_KEY
        new_token = await asyncio.to_thread(_login, server, "carol")
        assert (await verifier.verify(new_token)).valid  # the new kid: one refetch
    finally:
        await verifier.aclose()


async def _revocation_parity(
    server: ServerProcess, make: Callable[[], CallbackRevocations | WatchedRevocations]
) -> None:
    revocations = make()
    verifier = _verifier(server, "http", revocations=revocations)
    try:
        if isinstance(revocations, WatchedRevocations):
            async with asyncio.timeout(10):
                await revocations.wait_synced()
        token = await asyncio.to_thread(_login, server, "dave")
        assert (await verifier.verify(token)).valid
        with server.client() as client:
            await asyncio.to_thread(lambda: client.revoke(access_token=token))
            assert client.verify(token).result == pb.VERIFY_RESULT_REVOKED
        deadline = time.monotonic() + 5
        while (verdict := await verifier.verify(token)).reason != pb.VERIFY_RESULT_REVOKED:
            assert time.monotonic() < deadline, verdict
            await asyncio.sleep(0.1)
        assert verdict.detail == "the token has been revoked"
    finally:
        await verifier.aclose()


@needs_revocation_service
async def test_revocation_by_callback_matches_the_server(
    authority: tuple[ServerProcess, SigningKey],
) -> None:
    server, _ = authority
    await _revocation_parity(server, lambda: CallbackRevocations(server.target, metadata=READER))


@needs_revocation_service
async def test_revocation_by_watch_matches_the_server(
    authority: tuple[ServerProcess, SigningKey],
) -> None:
    server, _ = authority
    await _revocation_parity(server, lambda: WatchedRevocations(server.target, metadata=READER))
