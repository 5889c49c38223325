"""The JWKS cache against a real HTTP server (stdlib, in a thread) and an in-test gRPC
KeyService: validators, max-age, single flight, rate-limited refetch, strict parsing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from authority_client.jwks import (
    GrpcJwksSource,
    HttpJwksSource,
    JwkError,
    JwksCache,
    jwk_thumbprint,
    parse_jwk,
    parse_jwks,
    parse_max_age,
)
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf.duration_pb2 import Duration

from authority.v1 import keys_pb2, keys_pb2_grpc
from tests.client.support import FakeClock, JwksHttpServer, SigningKey, b64, jwks_document


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ("EdDSA", "ES256", "RS256")}


# -- HTTP -------------------------------------------------------------------------------


async def test_http_fetch_then_304_keeps_the_cached_set(keys: dict[str, SigningKey]) -> None:
    ed = keys["EdDSA"]
    clock = FakeClock()
    with JwksHttpServer(jwks_document(ed), max_age=60) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock)
        first = await cache.keys()
        assert set(first) == {ed.kid}
        assert http.requests == 1 and http.if_none_match == [None]

        clock.advance(61)  # max-age ran out: revalidate, don't refetch blindly
        second = await cache.keys()
        assert http.requests == 2
        assert http.not_modified == 1
        assert http.if_none_match[1] is not None and http.if_none_match[1].startswith('"')
        assert second[ed.kid] is first[ed.kid]  # the same parsed key, not a re-parse


async def test_max_age_is_honoured(keys: dict[str, SigningKey]) -> None:
    clock = FakeClock()
    with JwksHttpServer(jwks_document(keys["EdDSA"]), max_age=120) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock)
        await cache.keys()
        clock.advance(119)
        await cache.keys()
        assert http.requests == 1
        clock.advance(2)
        await cache.keys()
        assert http.requests == 2


async def test_a_rotation_is_picked_up_and_unchanged_keys_are_reused(
    keys: dict[str, SigningKey],
) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    clock = FakeClock()
    with JwksHttpServer(jwks_document(ed), max_age=600) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock)
        before = await cache.keys()
        http.document = jwks_document(ed, es)
        clock.advance(11)  # within max-age, but past the refetch interval
        found = await cache.get(es.kid)  # an unknown kid refetches once
        assert found is not None and found.algorithm == "ES256"
        assert cache.current()[ed.kid] is before[ed.kid]
        assert http.requests == 2


async def test_forged_kids_cause_at_most_one_fetch_per_interval(
    keys: dict[str, SigningKey],
) -> None:
    clock = FakeClock()
    with JwksHttpServer(jwks_document(keys["EdDSA"]), max_age=600, delay=0.2) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock, min_refetch_interval=10)
        await cache.keys()
        assert http.requests == 1

        # Within the interval: 200 forged kids, not a single fetch.
        found = await asyncio.gather(*(cache.get(f"forged-{i}") for i in range(200)))
        assert found == [None] * 200
        assert http.requests == 1

        # Past the interval: 200 concurrent forged kids share one (slow) fetch.
        clock.advance(10)
        found = await asyncio.gather(*(cache.get(f"forged-{i}") for i in range(200)))
        assert found == [None] * 200
        assert http.requests == 2
        assert cache.fetches == 2


async def test_200_concurrent_first_callers_share_the_initial_fetch(
    keys: dict[str, SigningKey],
) -> None:
    ed = keys["EdDSA"]
    with JwksHttpServer(jwks_document(ed), delay=0.2) as http:
        cache = JwksCache(HttpJwksSource(http.url))
        results = await asyncio.gather(
            *(cache.get(ed.kid if i % 2 else f"forged-{i}") for i in range(200))
        )
        assert http.requests == 1
        assert sum(r is not None for r in results) == 100


async def test_a_failed_fetch_keeps_the_previous_keys(keys: dict[str, SigningKey]) -> None:
    ed = keys["EdDSA"]
    clock = FakeClock()
    with JwksHttpServer(jwks_document(ed), max_age=60) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock)
        await cache.keys()
        http.status = 503
        clock.advance(61)
        assert set(await cache.keys()) == {ed.kid}
        assert cache.last_error is not None and "503" in cache.last_error
        # ...and the next attempt waits for the interval, not for every caller.
        await cache.keys()
        assert http.requests == 2


async def test_an_unreachable_authority_leaves_the_cache_empty_not_broken() -> None:
    cache = JwksCache(HttpJwksSource("http://127.0.0.1:9/.well-known/jwks.json", timeout=1))
    assert await cache.get("anything") is None
    assert not cache.loaded and cache.last_error


def test_cache_control_parsing() -> None:
    assert parse_max_age("public, max-age=600") == 600
    assert parse_max_age("max-age=0") == 0
    assert parse_max_age("no-store") == 0
    assert parse_max_age("no-cache, max-age=60") == 0
    assert parse_max_age("public") is None
    assert parse_max_age(None) is None


async def test_no_cache_is_floored_by_the_refetch_interval(keys: dict[str, SigningKey]) -> None:
    clock = FakeClock()
    with JwksHttpServer(jwks_document(keys["EdDSA"]), max_age=0) as http:
        cache = JwksCache(HttpJwksSource(http.url), clock=clock, min_refetch_interval=10)
        for _ in range(50):
            await cache.keys()
        assert http.requests == 1


# -- gRPC ------------------------------------------------------------------------------


class _KeyService(keys_pb2_grpc.KeyServiceServicer):  # only GetJwks is called
    def __init__(self, document: bytes) -> None:
        self.document = document
        self.calls = 0

    async def GetJwks(
        self, request: keys_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> keys_pb2.GetJwksResponse:
        self.calls += 1
        return keys_pb2.GetJwksResponse(
            jwks_json=self.document.decode(),
            etag=str(hash(self.document) & 0xFFFFFFFF),
            max_age=Duration(seconds=30),
        )


async def test_grpc_source_honours_etag_and_max_age(keys: dict[str, SigningKey]) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    service = _KeyService(jwks_document(ed))  # type: ignore[abstract]
    server = grpc.aio.server()
    keys_pb2_grpc.add_KeyServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clock = FakeClock()
    source = GrpcJwksSource(f"127.0.0.1:{port}")
    try:
        cache = JwksCache(source, clock=clock)
        first = await cache.keys()
        clock.advance(29)
        await cache.keys()
        assert service.calls == 1  # max_age 30 s
        clock.advance(2)
        second = await cache.keys()
        assert service.calls == 2
        assert second[ed.kid] is first[ed.kid]  # same etag: nothing re-parsed
        service.document = jwks_document(ed, es)
        assert (await cache.refresh()).keys() == {ed.kid, es.kid}
    finally:
        await source.aclose()
        await server.stop(None)


# -- strict parsing -----------------------------------------------------------------------


def test_rfc7638_thumbprint_example() -> None:
    """The worked example of RFC 7638 section 3.1."""
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
            "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65"
            "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
            "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnq"
            "DKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_every_supported_key_type_parses_with_the_servers_thumbprint(
    keys: dict[str, SigningKey],
) -> None:
    for alg, key in keys.items():
        parsed = parse_jwk(key.jwk)  # the server computed kid; we recompute and compare
        assert parsed.kid == key.kid and parsed.algorithm == alg


def _rsa_jwk(bits: int) -> dict[str, str]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    n = numbers.public_numbers().n
    jwk = {
        "kty": "RSA",
        "alg": "RS256",
        "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": "AQAB",
    }
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def test_bad_keys_are_refused(keys: dict[str, SigningKey]) -> None:
    ed, es = keys["EdDSA"].jwk, keys["ES256"].jwk
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    p384_jwk = {
        "kty": "EC",
        "crv": "P-384",
        "alg": "ES256",
        "x": b64(p384.x.to_bytes(48, "big")),
        "y": b64(p384.y.to_bytes(48, "big")),
    }
    cases: dict[str, Any] = {
        "private member": {**ed, "d": ed["x"]},
        "symmetric key": {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "x"},
        "alg none": {**ed, "alg": "none"},
        "no alg": {k: v for k, v in ed.items() if k != "alg"},
        "alg/kty mismatch": {**ed, "alg": "ES256"},
        "wrong curve": {**es, "crv": "P-384"},
        "P-384 key as ES256": {**p384_jwk, "crv": "P-256"},
        "kid is not the thumbprint": {**ed, "kid": "my-key"},
        "no kid": {k: v for k, v in ed.items() if k != "kid"},
        "padded base64": {**ed, "x": ed["x"] + "="},
        "standard base64 alphabet": {**ed, "x": "+" + ed["x"][1:]},
        "short Ed25519 key": {**ed, "x": ed["x"][:-4]},
        "use enc": {**ed, "use": "enc"},
        "RSA 1024": _rsa_jwk(1024),
        "not an object": ["kty", "OKP"],
    }
    for name, jwk in cases.items():
        try:
            parse_jwk(jwk)
        except JwkError:
            continue
        pytest.fail(f"accepted: {name}")


def test_a_document_skips_bad_keys_and_refuses_duplicates(keys: dict[str, SigningKey]) -> None:
    ed, es = keys["EdDSA"].jwk, keys["ES256"].jwk
    document = json.dumps({"keys": [ed, {**es, "d": "AAAA"}, {"kty": "future"}]})
    assert set(parse_jwks(document)) == {ed["kid"]}
    assert parse_jwks(json.dumps({"keys": [ed, ed, es]})).keys() == {es["kid"]}
    for bad in (b"not json", b"[]", b'{"keys": {}}', b"{}"):
        with pytest.raises(JwkError):
            parse_jwks(bad)
