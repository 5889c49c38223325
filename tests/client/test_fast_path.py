"""LocalVerifier's fast paths never change a verdict: over the attack corpus, arbitrary
signed payloads, a retired key and both revocation modes, a warm verifier (headers seen,
token cache on, every token asked twice) answers exactly as the JOSE core's whole path
does with no cache at all (``fast_path=False`` and a new verifier per token)."""

from __future__ import annotations

import asyncio
import base64
import codecs
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest
from authority_client.fast_claims import typed_claims
from authority_client.jwks import JwksCache, StaticJwksSource
from authority_client.revocation import CallbackRevocations, WatchedRevocations
from authority_client.verifier import LocalVerifier, Verification, _valid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authority.jose.claims import ClaimsError, parse_claims
from authority.jose.jws import P256_ORDER, to_low_s
from authority.v1 import revocation_pb2
from authority.v1 import token_pb2 as pb
from tests.client.support import (
    ISSUER,
    FakeClock,
    FakeRevocationService,
    SigningKey,
    b64,
    claims,
    event,
    forge,
    jwks_document,
    revocation,
    serve,
    sign_raw,
)

Corpus = dict[str, tuple[str, str | list[str] | None]]
Answer = tuple[int, str, Any, str]


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ("EdDSA", "ES256", "RS256")}


def sign_under(key: SigningKey, header_segment: str, payload: bytes) -> str:
    """``payload`` signed by ``key`` under exactly ``header_segment`` (the one a verifier
    has seen), so the token takes the fast path as far as its checks allow."""
    p = b64(payload)
    signature = jwt.get_algorithm_by_name(key.algorithm).sign(
        f"{header_segment}.{p}".encode(), key.private_key
    )
    if key.algorithm == "ES256":
        signature = to_low_s(signature)
    return f"{header_segment}.{p}.{b64(signature)}"


def respell(segment: str) -> list[str]:
    """Lax spellings of ``segment``: flipped unused bits, padding."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    last = alphabet.index(segment[-1])
    flipped = [segment[:-1] + alphabet[last ^ bit] for bit in range(1, 1 << unused)]
    return [*flipped, segment + "=" * (-len(segment) % 4 or 2)]


def attack_corpus(keys: dict[str, SigningKey]) -> Corpus:
    """name -> (token, audience): every verdict, most of them under a seen header."""
    ed, es, rs = keys["EdDSA"], keys["ES256"], keys["RS256"]
    now = int(time.time())
    good = ed.sign(claims())
    h, p, s = good.split(".")
    header = {"alg": "EdDSA", "kid": ed.kid, "typ": "at+jwt"}
    h_hs = b64(json.dumps({**header, "alg": "HS256"}).encode())
    mac = hmac.new(ed.jwk["x"].encode(), f"{h_hs}.{p}".encode(), hashlib.sha256).digest()
    es_h, es_p, es_s = es.sign(claims()).split(".")
    raw = base64.urlsafe_b64decode(es_s + "=" * (-len(es_s) % 4))
    high_s = b64(raw[:32] + (P256_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big"))
    body = json.dumps(claims()).encode()

    def under(payload: bytes, key: SigningKey = ed) -> str:
        return sign_under(key, h if key is ed else key.sign(claims()).split(".")[0], payload)

    def signed(**changes: Any) -> str:
        return under(json.dumps(claims(**changes)).encode())

    corpus: Corpus = {
        "valid EdDSA": (good, None),
        "valid ES256": (es.sign(claims()), None),
        "valid RS256": (rs.sign(claims()), None),
        "valid, seen header, extra claims": (signed(team="blue", aud=["billing", "orders"]), None),
        "valid, audience named": (signed(aud=["billing", "orders"]), "billing"),
        "valid, audience list asked": (good, ["billing", "orders"]),
        "valid, sid and client_id null": (
            under(json.dumps({**claims(), "sid": None, "client_id": None}).encode()),
            None,
        ),
        "valid, fractional iat": (signed(iat=now - 0.25), None),
        "valid ES256, seen header": (under(body, es), None),
        "valid RS256, seen header": (under(body, rs), None),
        "expired": (signed(exp=now - 3600), None),
        "expired within the leeway": (signed(exp=now - 5), None),
        "nbf in the future": (signed(nbf=now + 3600), None),
        "nbf within the leeway": (signed(nbf=now + 5), None),
        "iat in the future": (signed(iat=now + 3600), None),
        "wrong issuer": (signed(iss="https://evil"), None),
        "wrong audience": (good, "billing"),
        "alg none": (forge({**header, "alg": "none"}, claims(), b""), None),
        "HS256 with the public key": (f"{h_hs}.{p}.{b64(mac)}", None),
        "ES256 header on the EdDSA kid": (
            sign_raw(es, {**header, "alg": "ES256"}, p.encode()),
            None,
        ),
        "EdDSA header on the ES256 kid": (
            sign_raw(ed, {**header, "kid": es.kid}, p.encode()),
            None,
        ),
        "unknown kid": (forge({**header, "kid": "nope"}, claims()), None),
        "kid not a string": (forge({**header, "kid": 7}, claims()), None),
        "typ JWT": (ed.sign(claims(), header={"typ": "JWT"}), None),
        "no typ": (forge({"alg": "EdDSA", "kid": ed.kid}, claims()), None),
        "crit": (ed.sign(claims(), header={"crit": ["exp"]}), None),
        "tampered": (f"{h}.{b64(json.dumps(claims(sub='admin')).encode())}.{s}", None),
        "signature of another token": (f"{h}.{p}.{ed.sign(claims()).split('.')[2]}", None),
        "signature truncated": (f"{h}.{p}.{s[:-4]}", None),
        "signature a byte short": (f"{h}.{p}.{s[:-2]}", None),
        "empty signature": (f"{h}.{p}.", None),
        "high-S ES256": (f"{es_h}.{es_p}.{high_s}", None),
        "high-S ES256, non-ASCII payload": (f"{es_h}.{es_p}é.{high_s}", None),
        "non-ASCII payload": (f"{h}.{p}é.{s}", None),
        "non-ASCII signature": (f"{h}.{p}.{s}é", None),
        "padded header": (f"{h}=.{p}.{s}", None),
        "four parts": (good + ".x", None),
        "two parts": (f"{h}.{p}", None),
        "the header alone": (h, None),
        "header is a list": (f"{b64(b'[1]')}.{p}.{s}", None),
        "oversized": (good + "A" * 9000, None),
        "garbage": ("not a token at all", None),
        "empty": ("", None),
        "claims without jti": (signed(jti=None), None),
        "claims with an empty sub": (signed(sub=""), None),
        "empty aud list": (signed(aud=[]), None),
        "aud with a number": (signed(aud=["orders", 1]), None),
        "exp true": (signed(exp=True), None),
        "exp a string": (signed(exp="tomorrow"), None),
        "exp out of range": (signed(exp=2**53), None),
        "scope a list": (signed(scope=["a"]), None),
        "sid a number": (signed(sid=5), None),
        "claims not JSON": (under(b"\xff{"), None),
        "claims a list": (under(b"[]"), None),
        "claims empty": (under(b""), None),
        "claims JSON with trailing data": (under(body + b"x"), None),
        "claims JSON with trailing space": (under(body + b" \n"), None),
        "claims with leading space": (under(b" " + body), None),
        "claims exp NaN": (under(b'{"exp": NaN}'), None),
        "claims UTF-16": (under(json.dumps(claims()).encode("utf-16-le")), None),
        "claims UTF-16 with BOM": (under(json.dumps(claims()).encode("utf-16")), None),
        "claims UTF-8 with BOM": (under(codecs.BOM_UTF8 + body), None),
        "claims with a lone surrogate": (under(body[:-1] + b',"x":"\xed\xa0\x80"}'), None),
        **{
            f"lone surrogate: {name}": (token, None)
            for name, token in lone_surrogates(keys).items()
        },
        "escaped surrogate pair": (under(body[:-1] + b',"x":"\\ud83d\\ude00"}'), None),
        "escaped backslash, then ud800": (under(body[:-1] + b',"x":"\\\\ud800"}'), None),
        "Hangul, opening with 0xED": (under(body[:-1] + ',"x":"\ud55c"}'.encode()), None),
        "claims deeply nested": (under(b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}"), None),
    }
    for index, spelling in enumerate(respell(s)):
        corpus[f"signature respelled {index}"] = (f"{h}.{p}.{spelling}", None)
    for index, spelling in enumerate(respell(p)):
        corpus[f"payload respelled {index}"] = (f"{h}.{spelling}.{s}", None)
    return corpus


def lone_surrogates(keys: dict[str, SigningKey]) -> dict[str, str]:
    """Tokens validly signed by a published key whose JSON holds a lone UTF-16 surrogate,
    which I-JSON (RFC 7493) forbids: each is MALFORMED, on every path."""
    ed = keys["EdDSA"]
    h = ed.sign(claims()).split(".")[0]
    body = json.dumps(claims()).encode()

    def extra(member: bytes, key: SigningKey = ed) -> str:
        header = h if key is ed else key.sign(claims()).split(".")[0]
        return sign_under(key, header, body[:-1] + b"," + member + b"}")

    header = {"alg": "EdDSA", "kid": ed.kid, "typ": "at+jwt"}
    return {
        "escaped high": extra(b'"x":"\\ud800"'),
        "escaped low, upper case": extra(b'"x":"\\uDFFF"'),
        "escaped pair reversed": extra(b'"x":"\\ude00\\ud83d"'),
        "escaped, in a member name": extra(b'"\\udbff":1'),
        "escaped, nested in act": extra(b'"act":{"sub":"p_2","act":{"sub":["\\udc00"]}}'),
        "escaped high, then a low one's bytes": extra(b'"x":"\\ud83d\xed\xb8\x80"'),
        "a pair's own bytes (CESU-8)": extra(b'"x":"\xed\xa0\xbd\xed\xb8\x80"'),
        "escaped, ES256": extra(b'"x":"\\ud800"', keys["ES256"]),
        "escaped, RS256": extra(b'"x":"\\ud800"', keys["RS256"]),
        "as json.dumps writes it": ed.sign(claims(team="\ud800")),
        "in UTF-16": sign_under(
            ed,
            h,
            json.dumps(claims(x="\ud800"), ensure_ascii=False).encode("utf-16", "surrogatepass"),
        ),
        "in the header": sign_raw(ed, {**header, "x": "\udfff"}, body),
        "in the header's kid": sign_raw(ed, {**header, "kid": "\ud800"}, body),
    }


# Tokens the fast path answers by itself (the rest it hands to the core).
FAST = {
    "escaped surrogate pair",
    "escaped backslash, then ud800",
    "Hangul, opening with 0xED",
    "valid, seen header, extra claims",
    "valid, sid and client_id null",
    "valid ES256, seen header",
    "valid RS256, seen header",
    "expired",
    "nbf in the future",
    "wrong issuer",
    "tampered",
    "signature of another token",
    "signature a byte short",
    "empty signature",
}


def answer(verdict: Verification) -> Answer:
    """What a caller can tell apart, down to each claim's type (``1 == 1.0``)."""
    assert type(verdict) is Verification
    return (verdict.reason, verdict.detail, verdict.claims, repr(verdict))


async def reference(token: str, audience: Any, document: bytes, **options: Any) -> Answer:
    """The core's whole path, no cache: a new verifier for one token."""
    verifier = LocalVerifier(
        StaticJwksSource(document), issuer=ISSUER, audience="orders", fast_path=False, **options
    )
    try:
        return answer(await verifier.verify(token, audience))
    finally:
        await verifier.aclose()


def warm(keys: dict[str, SigningKey], **options: Any) -> LocalVerifier:
    return LocalVerifier(
        StaticJwksSource(jwks_document(*keys.values())),
        issuer=ISSUER,
        audience="orders",
        **options,
    )


async def assert_same_verdicts(
    verifier: LocalVerifier, corpus: Corpus, document: bytes, **options: Any
) -> None:
    for name, (token, audience) in corpus.items():
        expected = await reference(token, audience, document, **options)
        for attempt in ("first", "again (cached if cacheable)"):
            got = answer(await verifier.verify(token, audience))
            assert got == expected, (name, attempt, got, expected)


async def test_the_attack_corpus_gets_the_cores_verdicts(keys: dict[str, SigningKey]) -> None:
    corpus = attack_corpus(keys)
    document = jwks_document(*keys.values())
    verifier = warm(keys)
    try:
        for alg in keys:  # every key's header seen once, as after the first real token
            assert (await verifier.verify(corpus[f"valid {alg}"][0])).valid
        to_core: set[str] = set()
        core = verifier._verify_signature

        async def recorded(token: str) -> Any:
            to_core.add(token)
            return await core(token)

        verifier._verify_signature = recorded  # type: ignore[method-assign]
        await assert_same_verdicts(verifier, corpus, document)
        # The fast path was taken: a token under a seen header, with a canonical signature
        # and well-formed claims, never reached the core, whether its signature held or not.
        fast = {name for name, (token, _) in corpus.items() if token not in to_core}
        assert fast >= FAST, FAST - fast
        # A second pass, every verdict now from the token cache where one was cached.
        await assert_same_verdicts(verifier, corpus, document)
    finally:
        await verifier.aclose()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "core"])
async def test_a_lone_surrogate_is_malformed_on_every_path(
    keys: dict[str, SigningKey], fast_path: bool
) -> None:
    """The verdict itself, not only its parity: MALFORMED, before and after the header is
    seen, and never cached (the token a signer could be tricked into minting)."""
    verifier = warm(keys, fast_path=fast_path)
    try:
        for key in keys.values():  # every header seen once, as after the first real token
            assert (await verifier.verify(key.sign(claims()))).valid
        for name, token in lone_surrogates(keys).items():
            for attempt in ("first", "again"):
                verdict = await verifier.verify(token)
                assert verdict.reason == pb.VERIFY_RESULT_MALFORMED, (name, attempt, verdict)
                assert "lone UTF-16 surrogate" in verdict.detail, (name, verdict.detail)
                assert verdict.claims is None
        assert verifier.cached == len(keys)
    finally:
        await verifier.aclose()


async def test_without_the_fast_path_the_verdicts_are_the_same(
    keys: dict[str, SigningKey],
) -> None:
    verifier = warm(keys, fast_path=False)
    try:
        await assert_same_verdicts(verifier, attack_corpus(keys), jwks_document(*keys.values()))
    finally:
        await verifier.aclose()


async def test_a_retired_key_is_refused_on_the_fast_path_and_from_the_cache(
    keys: dict[str, SigningKey],
) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    source = StaticJwksSource(jwks_document(ed, es))
    verifier = LocalVerifier(source, issuer=ISSUER, audience="orders")
    try:
        seen = ed.sign(claims())
        assert (await verifier.verify(seen)).valid
        assert (await verifier.verify(ed.sign(claims()))).valid  # the fast path
        retired = jwks_document(es)
        source.set(retired)
        await verifier.jwks.refresh()
        corpus = {
            "cached, key retired": (seen, None),
            "never seen, seen header, key retired": (ed.sign(claims()), None),
            "the other key": (es.sign(claims()), None),
        }
        await assert_same_verdicts(verifier, corpus, retired)
        assert (await verifier.verify(seen)).reason == pb.VERIFY_RESULT_UNKNOWN_KEY
        source.set(jwks_document(ed, es))  # republished: a new key object, the core decides
        await verifier.jwks.refresh()
        assert (await verifier.verify(ed.sign(claims()))).valid
    finally:
        await verifier.aclose()


async def _revocation_parity(
    keys: dict[str, SigningKey],
    make: Callable[[], CallbackRevocations | WatchedRevocations],
    ready: Callable[[CallbackRevocations | WatchedRevocations], Awaitable[None]],
) -> None:
    ed = keys["EdDSA"]
    revoked, kept = ed.sign(claims(jti="j_revoked")), ed.sign(claims(jti="j_kept"))
    revocations = make()
    verifier = warm(keys, revocations=revocations)
    try:
        await ready(revocations)
        assert (await verifier.verify(ed.sign(claims()))).valid  # the header is seen
        document = jwks_document(*keys.values())
        corpus: Corpus = {"revoked": (revoked, None), "not revoked": (kept, None)}
        for name, (token, audience) in corpus.items():
            reference_checker = make()
            try:
                await ready(reference_checker)
                expected = await reference(token, audience, document, revocations=reference_checker)
            finally:
                await reference_checker.aclose()
            for attempt in ("first", "cached"):
                got = answer(await verifier.verify(token, audience))
                assert got == expected, (name, attempt, got, expected)
        assert (await verifier.verify(revoked)).reason == pb.VERIFY_RESULT_REVOKED
        assert (await verifier.verify(kept)).valid
    finally:
        await verifier.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRevocationService, str]]:
    service = FakeRevocationService(revoked={"j_revoked"})
    server, target = await serve(service)
    yield service, target
    await server.stop(None)


async def test_revoked_tokens_by_callback(
    keys: dict[str, SigningKey], fake: tuple[FakeRevocationService, str]
) -> None:
    _, target = fake

    async def nothing(checker: Any) -> None:
        return None

    await _revocation_parity(keys, lambda: CallbackRevocations(target), nothing)


async def test_revoked_tokens_by_watch(
    keys: dict[str, SigningKey], fake: tuple[FakeRevocationService, str]
) -> None:
    service, target = fake

    async def script(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        yield event(snapshot=[revocation(revocation_pb2.REVOCATION_KIND_TOKEN, "j_revoked")])
        while True:
            await asyncio.sleep(0.05)
            yield event(heartbeat=True)

    service.watch_script = script

    async def synced(checker: Any) -> None:
        await checker.start()
        async with asyncio.timeout(5):
            await checker.wait_synced()

    await _revocation_parity(keys, lambda: WatchedRevocations(target), synced)


# -- arbitrary payloads under a seen header ---------------------------------------------

_KEY = SigningKey.generate("EdDSA")
_NOW = 1_800_000_000
_DOCUMENT = jwks_document(_KEY)
_HEADER = _KEY.sign(claims(exp=_NOW + 60, iat=_NOW, nbf=_NOW)).split(".")[0]


class _Shared:
    loop: asyncio.AbstractEventLoop
    verifier: LocalVerifier


@pytest.fixture(scope="module")
def shared() -> Any:
    state = _Shared()
    state.loop = asyncio.new_event_loop()
    state.verifier = LocalVerifier(
        StaticJwksSource(_DOCUMENT), issuer=ISSUER, audience="orders", now=lambda: _NOW
    )
    first = sign_under(_KEY, _HEADER, json.dumps(claims(exp=_NOW + 60, iat=_NOW)).encode())
    assert state.loop.run_until_complete(state.verifier.verify(first)).valid
    yield state
    state.loop.run_until_complete(state.verifier.aclose())
    state.loop.close()


_near_valid = st.fixed_dictionaries(
    {
        "iss": st.sampled_from([ISSUER, "x"]),
        "sub": st.sampled_from(["p_1", "", None]),
        "aud": st.sampled_from(["orders", ["orders"], [], "billing", 3]),
        "exp": st.one_of(st.integers(_NOW - 100, _NOW + 100), st.floats(), st.booleans()),
        "iat": st.one_of(st.floats(_NOW - 100, _NOW + 100), st.none()),
        "jti": st.sampled_from(["j", "", None, 1]),
    },
    optional={
        "nbf": st.integers(_NOW - 100, _NOW + 100),
        "sid": st.sampled_from(["s", "", None, 2]),
        "scope": st.sampled_from(["a b", "", ["a"]]),
        "team": st.text(max_size=3),
    },
)
_payload_bytes = st.one_of(
    _near_valid.map(lambda d: json.dumps(d).encode()),
    st.tuples(_near_valid, st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"])).map(
        lambda pair: json.dumps(pair[0]).encode(pair[1])
    ),
    st.binary(max_size=40),
    st.binary(max_size=8).map(lambda b: b'{"' + b),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payload_bytes, audience=st.sampled_from([None, "billing"]))
def test_arbitrary_payloads_under_a_seen_header(
    shared: _Shared, payload: bytes, audience: str | None
) -> None:
    token = sign_under(_KEY, _HEADER, payload)
    expected = shared.loop.run_until_complete(
        reference(token, audience, _DOCUMENT, now=lambda: _NOW)
    )
    got = answer(shared.loop.run_until_complete(shared.verifier.verify(token, audience)))
    assert got == expected, (payload, got, expected)


_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**54), 2**54),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_json = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=4)
_members = st.sampled_from(
    ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "client_id", "scope", "team"]
)


@settings(max_examples=1000, deadline=None)
@given(
    base=_near_valid,
    changed=st.dictionaries(_members, _json, max_size=3),
    dropped=st.sets(_members, max_size=2),
)
def test_typed_claims_are_the_cores_or_none(
    base: dict[str, Any], changed: dict[str, Any], dropped: set[str]
) -> None:
    payload = {k: v for k, v in {**base, **changed}.items() if k not in dropped}
    fast = typed_claims(payload, "kid")
    try:
        core = parse_claims(payload, "kid")
    except ClaimsError:
        assert fast is None, payload
        return
    if fast is not None:
        assert (fast, repr(fast)) == (core, repr(core)), payload


def test_the_valid_answer_is_a_plain_verification() -> None:
    typed = parse_claims(claims(), "kid")
    built = _valid(typed)
    expected = Verification(pb.VERIFY_RESULT_VALID, "", typed)
    assert type(built) is Verification and built.valid
    assert (built, repr(built)) == (expected, repr(expected))


async def test_keys_past_their_max_age_are_refetched_before_a_verdict(
    keys: dict[str, SigningKey],
) -> None:
    """``JwksCache.fresh`` lets verify skip a coroutine only while no fetch is due."""
    ed = keys["EdDSA"]
    clock = FakeClock()
    source = StaticJwksSource(jwks_document(ed))
    jwks = JwksCache(source, clock=clock, default_max_age=60, min_refetch_interval=10)
    verifier = LocalVerifier(jwks, issuer=ISSUER, audience="orders")
    try:
        assert (await verifier.verify(ed.sign(claims()))).valid
        assert source.fetches == 1 and jwks.fresh() is not None
        clock.advance(30)
        assert (await verifier.verify(ed.sign(claims()))).valid
        assert source.fetches == 1
        source.set(jwks_document(keys["ES256"]))  # ed retired; seen after max-age
        clock.advance(31)
        assert jwks.fresh() is None
        verdict = await verifier.verify(ed.sign(claims()))
        assert verdict.reason == pb.VERIFY_RESULT_UNKNOWN_KEY
        assert source.fetches == 1  # set() resets the count: one fetch since
    finally:
        await verifier.aclose()
