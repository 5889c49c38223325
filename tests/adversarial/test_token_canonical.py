"""One token, one string: no other spelling of a token we signed is ever VALID.

A base64url segment whose length leaves unused bits in its last character can be spelled
several ways that decode to the same bytes; an ECDSA signature (r, s) has a twin
(r, n - s). Either would let one token pass as several strings, past anything keyed on
the string (caches, deny-lists, logs). Attacked for each algorithm against a real server
(Verify and Envoy's ext_authz Check) and the client library's LocalVerifier; the pure
decoders are checked by property.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator

import grpc
import pytest
from authority_client import LocalVerifier
from authority_client import verifier as client_verifier
from hypothesis import given
from hypothesis import strategies as st

from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.jose.jws import P256_ORDER
from authority.tokens import jws
from authority.v1 import token_pb2
from tests.integration.server import ServerProcess

ISSUER = "https://auth.example.test"
PASSWORD = "a perfectly fine passphrase"
VALID = token_pb2.VERIFY_RESULT_VALID
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SEGMENTS = ("header", "payload", "signature")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def respellings(segment: str) -> list[str]:
    """Every other spelling of ``segment`` that a lax decoder reads as the same bytes: the
    last character with its unused low bits flipped, and padded forms."""
    unused = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    last = ALPHABET.index(segment[-1])
    flipped = [
        segment[:-1] + ALPHABET[(last & ~((1 << unused) - 1)) | bits] for bits in range(1 << unused)
    ]
    padded = [segment + "=" * (-len(segment) % 4)] if len(segment) % 4 else [segment + "=="]
    return [s for s in flipped + padded if s != segment]


def variants(token: str) -> Iterator[tuple[str, str]]:
    """(what, token) for every respelling of every segment."""
    parts = token.split(".")
    for index, name in enumerate(SEGMENTS):
        for spelling in respellings(parts[index]):
            yield name, ".".join([*parts[:index], spelling, *parts[index + 1 :]])


def high_s_twin(token: str) -> str:
    """The same ES256 token with the signature (r, n - s)."""
    head, _, signature = token.rpartition(".")
    raw = unb64(signature)
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{b64(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def ext_authz_allows(server: ServerProcess, token: str) -> bool:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.headers["authorization"] = f"Bearer {token}"
    with server.channel() as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)
    return int(response.status.code) == grpc.StatusCode.OK.value[0]


def local_verdicts(server: ServerProcess, tokens: list[str]) -> list[int]:
    async def run() -> list[int]:
        verifier = LocalVerifier.for_authority(
            server.target,
            issuer=ISSUER,
            audience="default",
            jwks_url=f"{server.http}/.well-known/jwks.json",
            revocations="none",
        )
        async with verifier:
            return [int((await verifier.verify(token)).reason) for token in tokens]

    return asyncio.run(run())


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_every_other_spelling_of_a_token_is_rejected_everywhere(
    start_server: Callable[..., ServerProcess], algorithm: str
) -> None:
    server = start_server(AUTHORITY_ALGORITHM=algorithm, AUTHORITY_ISSUER=ISSUER)
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        tokens = [client.issue_with_password("alice", PASSWORD).access_token for _ in range(4)]
        forged: list[tuple[str, str]] = [pair for token in tokens for pair in variants(token)]
        if algorithm == "ES256":
            for token in tokens:
                signature = unb64(token.rpartition(".")[2])
                assert int.from_bytes(signature[32:], "big") <= P256_ORDER // 2, "high-S signed"
            forged += [("high-S twin", high_s_twin(token)) for token in tokens]
        assert forged

        for token in tokens:  # the canonical tokens stay valid everywhere
            assert client.verify(token).result == VALID
            assert ext_authz_allows(server, token)
        assert local_verdicts(server, tokens) == [VALID] * len(tokens)

        accepted = [
            what
            for what, token in forged
            if client.verify(token).result == VALID or ext_authz_allows(server, token)
        ]
        assert accepted == [], f"{algorithm}: respelled tokens accepted by the server"
        local = local_verdicts(server, [token for _, token in forged])
        verdicts = zip(forged, local, strict=True)
        accepted = [what for (what, _), result in verdicts if result == VALID]
        assert accepted == [], f"{algorithm}: respelled tokens accepted by LocalVerifier"


DECODERS = [jws.b64url_decode, client_verifier.b64url_decode]


@pytest.mark.parametrize("decode", DECODERS)
@given(data=st.binary(max_size=80))
def test_decoding_an_encoding_gives_the_bytes_back(
    decode: Callable[[str], bytes], data: bytes
) -> None:
    assert decode(b64(data)) == data


@pytest.mark.parametrize("decode", DECODERS)
@given(text=st.text(alphabet=ALPHABET + "=+/.", max_size=40))
def test_whatever_decodes_is_the_one_encoding_of_its_bytes(
    decode: Callable[[str], bytes], text: str
) -> None:
    try:
        data = decode(text)
    except ValueError:
        return
    assert b64(data) == text
