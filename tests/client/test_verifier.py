"""LocalVerifier in-process: every reason, the token cache, revocation on every use, the
sync wrapper, and (with hypothesis) arbitrary input never raising and the same verdicts
as the authority's own verification code for arbitrary signed headers and claims."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from authority_client.jwks import JwksCache, StaticJwksSource
from authority_client.revocation import NOT_REVOKED, REVOKED, RevocationStatus
from authority_client.verifier import Claims, LocalVerifier, SyncLocalVerifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authority.api.convert import VERIFY_RESULT
from authority.domain.keys import Algorithm
from authority.domain.tokens import Verification as ServerVerification
from authority.domain.tokens import check_claims
from authority.jose.jws import P256_ORDER
from authority.tokens.jws import VerificationKey, verify_signature
from authority.v1 import token_pb2 as pb
from tests.client.support import (
    ISSUER,
    FakeClock,
    SigningKey,
    b64,
    claims,
    forge,
    jwks_document,
    sign_raw,
)


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg) for alg in ("EdDSA", "ES256", "RS256")}


def make_verifier(*signing: SigningKey, **options: Any) -> LocalVerifier:
    source = StaticJwksSource(jwks_document(*signing))
    return LocalVerifier(source, issuer=ISSUER, audience="orders", **options)


class Revocations:
    """A scripted revocation source: revokes the listed token ids, counts checks."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.checks = 0

    async def check(self, claims: Claims) -> RevocationStatus:
        self.checks += 1
        return REVOKED if claims.token_id in self.revoked else NOT_REVOKED

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_valid_tokens_of_every_algorithm(keys: dict[str, SigningKey]) -> None:
    verifier = make_verifier(*keys.values())
    for alg, key in keys.items():
        token = key.sign(claims(aud=["billing", "orders"], team="blue"))
        verdict = await verifier.verify(token)
        assert verdict.valid, (alg, verdict)
        assert verdict.reason == pb.VERIFY_RESULT_VALID
        assert verdict.reason_name == "VERIFY_RESULT_VALID"
        got = verdict.claims
        assert got is not None
        assert got.subject == "p_alice" and got.audience == ("billing", "orders")
        assert got.scope == ("orders:read", "orders:write")
        assert got.key_id == key.kid and got.session_id == "s_1" and got.client_id == "web"
        assert dict(got.extra) == {"team": "blue"}
        assert got.has_scopes({"orders:read"}) and not got.has_scopes({"admin"})


async def test_every_failure_has_the_servers_reason(keys: dict[str, SigningKey]) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    verifier = make_verifier(ed, es)
    now = int(time.time())
    good = ed.sign(claims())
    h, p, s = good.split(".")
    header = {"alg": "EdDSA", "kid": ed.kid, "typ": "at+jwt"}
    public = ed.jwk["x"].encode()
    h_hs = b64(json.dumps({**header, "alg": "HS256"}).encode())
    mac = hmac.new(public, f"{h_hs}.{p}".encode(), hashlib.sha256).digest()
    cases: dict[str, tuple[str, int, Any]] = {
        "expired": (ed.sign(claims(exp=now - 3600)), pb.VERIFY_RESULT_EXPIRED, None),
        "nbf in the future": (
            ed.sign(claims(nbf=now + 3600)),
            pb.VERIFY_RESULT_NOT_YET_VALID,
            None,
        ),
        "iat in the future": (
            ed.sign(claims(iat=now + 3600)),
            pb.VERIFY_RESULT_NOT_YET_VALID,
            None,
        ),
        "wrong issuer": (ed.sign(claims(iss="https://evil")), pb.VERIFY_RESULT_WRONG_ISSUER, None),
        "wrong audience": (good, pb.VERIFY_RESULT_WRONG_AUDIENCE, "billing"),
        "alg none": (forge({**header, "alg": "none"}, claims(), b""), 4, None),
        "HS256 with the public key": (f"{h_hs}.{p}.{b64(mac)}", 4, None),
        "header alg differs from the key's": (
            sign_raw(es, {**header, "alg": "ES256", "kid": ed.kid}, p.encode()),
            pb.VERIFY_RESULT_DISALLOWED_ALGORITHM,
            None,
        ),
        "unknown kid": (
            forge({**header, "kid": "nope"}, claims()),
            pb.VERIFY_RESULT_UNKNOWN_KEY,
            None,
        ),
        "kid not a string": (forge({**header, "kid": 7}, claims()), 5, None),
        "typ JWT": (ed.sign(claims(), header={"typ": "JWT"}), pb.VERIFY_RESULT_WRONG_TYPE, None),
        "no typ": (forge({"alg": "EdDSA", "kid": ed.kid}, claims()), 12, None),
        "crit": (ed.sign(claims(), header={"crit": ["exp"]}), pb.VERIFY_RESULT_MALFORMED, None),
        "tampered": (
            f"{h}.{b64(json.dumps(claims(sub='admin')).encode())}.{s}",
            pb.VERIFY_RESULT_BAD_SIGNATURE,
            None,
        ),
        "padded segment": (f"{h}=.{p}.{s}", pb.VERIFY_RESULT_MALFORMED, None),
        "padded signature": (f"{h}.{p}.{s}=", pb.VERIFY_RESULT_MALFORMED, None),
        "non-ASCII payload": (f"{h}.{p}é.{s}", pb.VERIFY_RESULT_MALFORMED, None),
        "garbage": ("not a token at all", pb.VERIFY_RESULT_MALFORMED, None),
        "empty": ("", pb.VERIFY_RESULT_MALFORMED, None),
        "four parts": (good + ".x", pb.VERIFY_RESULT_MALFORMED, None),
        "header is a list": (f"{b64(b'[1]')}.{p}.{s}", pb.VERIFY_RESULT_MALFORMED, None),
        "oversized": (good + "A" * 9000, pb.VERIFY_RESULT_TOO_LARGE, None),
        "claims without jti": (ed.sign(claims(jti=None)), pb.VERIFY_RESULT_MALFORMED, None),
        "empty aud list": (ed.sign(claims(aud=[])), pb.VERIFY_RESULT_MALFORMED, None),
        "exp true": (ed.sign(claims(exp=True)), pb.VERIFY_RESULT_MALFORMED, None),
        "scope list": (ed.sign(claims(scope=["a"])), pb.VERIFY_RESULT_MALFORMED, None),
        "claims not JSON": (sign_raw(ed, header, b"\xff{"), pb.VERIFY_RESULT_MALFORMED, None),
        "claims a list": (sign_raw(ed, header, b"[]"), pb.VERIFY_RESULT_MALFORMED, None),
        "exp NaN": (sign_raw(ed, header, b'{"exp": NaN}'), pb.VERIFY_RESULT_MALFORMED, None),
    }
    for name, (token, expected, audience) in cases.items():
        verdict = await verifier.verify(token, audience)
        assert verdict.reason == expected, (name, verdict)
        assert verdict.detail and verdict.claims is None, name


async def test_a_non_ascii_payload_gets_the_servers_verdict_and_detail(
    keys: dict[str, SigningKey],
) -> None:
    """The checks run in the authority's order: a high-S ES256 signature is refused as such
    before the (non-ASCII, so malformed) signing input is looked at."""
    es = keys["ES256"]
    h, p, s = es.sign(claims()).split(".")
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    high_s = raw[:32] + (P256_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    server_keys = {es.kid: VerificationKey(es.kid, Algorithm.ES256, es.private_key.public_key())}
    verifier = make_verifier(es)
    for signature in (s, b64(high_s)):
        token = f"{h}.{p}é.{signature}"
        server = verify_signature(token, server_keys, max_bytes=8192)
        assert isinstance(server, ServerVerification)
        local = await verifier.verify(token)
        assert (local.reason, local.detail) == (VERIFY_RESULT[server.reason], server.detail)


async def test_the_callers_allow_list_and_leeway(keys: dict[str, SigningKey]) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    strict = make_verifier(ed, es, algorithms=["EdDSA"], leeway=0)
    assert (await strict.verify(ed.sign(claims()))).valid
    verdict = await strict.verify(es.sign(claims()))
    assert verdict.reason == pb.VERIFY_RESULT_DISALLOWED_ALGORITHM
    just_expired = ed.sign(claims(exp=int(time.time()) - 5))
    assert (await strict.verify(just_expired)).reason == pb.VERIFY_RESULT_EXPIRED
    assert (await make_verifier(ed, leeway=30).verify(just_expired)).valid
    with pytest.raises(ValueError, match="algorithms"):
        make_verifier(ed, algorithms=["HS256"])


async def test_the_cache_rechecks_time_audience_and_revocation(
    keys: dict[str, SigningKey],
) -> None:
    ed = keys["EdDSA"]
    clock = FakeClock(time.time())
    revocations = Revocations()
    verifier = make_verifier(ed, now=clock, leeway=0, revocations=revocations)
    token = ed.sign(claims(exp=int(clock.now) + 60))
    assert (await verifier.verify(token)).valid
    assert verifier.cached == 1
    assert (await verifier.verify(token, "billing")).reason == pb.VERIFY_RESULT_WRONG_AUDIENCE
    assert (await verifier.verify(token)).valid
    assert revocations.checks == 2  # every valid answer asked, cached or not
    verdict = await verifier.verify(token)
    assert verdict.valid
    revocations.revoked.add(verdict.claims.token_id if verdict.claims else "")
    assert (await verifier.verify(token)).reason == pb.VERIFY_RESULT_REVOKED
    clock.advance(61)
    assert (await verifier.verify(token)).reason == pb.VERIFY_RESULT_EXPIRED
    assert verifier.cached == 0


async def test_a_key_that_left_the_jwks_invalidates_its_cached_tokens(
    keys: dict[str, SigningKey],
) -> None:
    ed, es = keys["EdDSA"], keys["ES256"]
    source = StaticJwksSource(jwks_document(ed, es))
    verifier = LocalVerifier(JwksCache(source), issuer=ISSUER, audience="orders")
    token = ed.sign(claims())
    assert (await verifier.verify(token)).valid
    source.set(jwks_document(es))  # ed compromised: removed from the key set
    await verifier.jwks.refresh()
    verdict = await verifier.verify(token)
    assert verdict.reason == pb.VERIFY_RESULT_UNKNOWN_KEY
    assert verifier.cached == 0


async def test_the_cache_is_bounded(keys: dict[str, SigningKey]) -> None:
    ed = keys["EdDSA"]
    verifier = make_verifier(ed, cache_size=50)
    for _ in range(120):
        assert (await verifier.verify(ed.sign(claims()))).valid
    assert verifier.cached <= 50


async def test_a_failing_revocation_source_fails_closed(keys: dict[str, SigningKey]) -> None:
    class Broken(Revocations):
        async def check(self, claims: Claims) -> RevocationStatus:
            raise RuntimeError("bug")

    verdict = await make_verifier(keys["EdDSA"], revocations=Broken()).verify(
        keys["EdDSA"].sign(claims())
    )
    assert verdict.reason == pb.VERIFY_RESULT_REVOKED and "unknown" in verdict.detail


async def test_no_keys_at_all_is_unknown_key_not_an_exception(keys: dict[str, SigningKey]) -> None:
    verifier = LocalVerifier(
        "http://127.0.0.1:9/.well-known/jwks.json", issuer=ISSUER, audience="orders"
    )
    verdict = await verifier.verify(keys["EdDSA"].sign(claims()))
    assert verdict.reason == pb.VERIFY_RESULT_UNKNOWN_KEY
    assert "could not be fetched" in verdict.detail


def test_sync_verifier_from_many_threads(keys: dict[str, SigningKey]) -> None:
    ed = keys["EdDSA"]
    tokens = [ed.sign(claims()) for _ in range(20)]
    with SyncLocalVerifier(make_verifier(ed)) as verifier:
        verifier.start()
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(verifier.verify, tokens * 5))
        assert all(v.valid for v in verdicts)
        assert verifier.verify(tokens[0], "billing").reason == pb.VERIFY_RESULT_WRONG_AUDIENCE
    assert not any(t.name == "authority-verifier" for t in threading.enumerate())


# -- hypothesis -------------------------------------------------------------------------

_KEY = SigningKey.generate("EdDSA")
_NOW = 1_800_000_000


class _Shared:
    """One loop and one verifier for every hypothesis example (set up per module)."""

    loop: asyncio.AbstractEventLoop
    verifier: LocalVerifier

    def verify(self, token: str, audience: str | None = None) -> Any:
        return self.loop.run_until_complete(self.verifier.verify(token, audience))


@pytest.fixture(scope="module")
def shared() -> Iterator[_Shared]:
    state = _Shared()
    state.loop = asyncio.new_event_loop()
    state.verifier = LocalVerifier(
        StaticJwksSource(jwks_document(_KEY)),
        issuer=ISSUER,
        audience="orders",
        now=lambda: _NOW,
        leeway=30,
    )
    yield state
    state.loop.run_until_complete(state.verifier.aclose())
    state.loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.from_regex(r"[A-Za-z0-9_\-=+/.é]{0,200}", fullmatch=True)))
def test_arbitrary_strings_never_raise(shared: _Shared, token: str) -> None:
    verdict = shared.verify(token)
    assert verdict.reason != pb.VERIFY_RESULT_VALID
    assert verdict.detail


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
times = st.one_of(
    st.integers(min_value=_NOW - 100, max_value=_NOW + 100),
    st.sampled_from([_NOW - 30, _NOW + 30, _NOW - 31, _NOW + 31, 2**53, -(2**53) + 1]),
    st.floats(min_value=_NOW - 100, max_value=_NOW + 100),
    json_value,
)
_CLAIM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "iss": st.sampled_from([ISSUER, "https://other", "", 5]),
    "sub": st.one_of(st.sampled_from(["p_1", ""]), json_value),
    "aud": st.one_of(
        st.sampled_from(["orders", "billing", ["billing", "orders"], [], ["orders", 1]]),
        json_value,
    ),
    "exp": times,
    "iat": times,
    "nbf": times,
    "jti": json_value,
    "sid": json_value,
    "client_id": json_value,
    "scope": st.one_of(st.sampled_from(["a b", " a  b ", ""]), json_value),
    "team": json_value,
}
_VALID_CLAIMS = {
    "iss": ISSUER,
    "sub": "p_1",
    "aud": "orders",
    "exp": _NOW + 60,
    "iat": _NOW,
    "nbf": _NOW,
    "jti": "j1",
}


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    """Mostly near-valid claims with a few members changed or dropped, so most examples
    reach the claim checks (a purely random payload would stop at the first one)."""
    payload: dict[str, Any] = dict(_VALID_CLAIMS)
    for name in draw(st.sets(st.sampled_from(sorted(_CLAIM_VALUES)), max_size=3)):
        payload[name] = draw(_CLAIM_VALUES[name])
    for name in draw(st.sets(st.sampled_from(sorted(_VALID_CLAIMS)), max_size=1)):
        payload.pop(name, None)
    return payload


_VALID_HEADER = {"alg": "EdDSA", "typ": "at+jwt", "kid": _KEY.kid}
headers = st.one_of(
    st.just(_VALID_HEADER),
    st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["EdDSA", "ES256", "RS256", "none", "HS256", 1]),
            "typ": st.sampled_from(["at+jwt", "JWT", None]),
            "kid": st.sampled_from([_KEY.kid, "other", 3]),
            "crit": st.just(["x"]),
        },
    ).map(lambda changes: {**_VALID_HEADER, **changes}),
    json_value,
)


def _server_verdict(token: str, audience: str) -> int:
    """The authority's own functions (not importable by the client, fine for a test)."""
    keys = {_KEY.kid: VerificationKey(_KEY.kid, Algorithm.EDDSA, _KEY.private_key.public_key())}
    checked = verify_signature(token, keys, max_bytes=8192)
    if isinstance(checked, ServerVerification):
        return VERIFY_RESULT[checked.reason]
    verdict = check_claims(
        checked, issuer=ISSUER, audiences=frozenset({audience}), now=_NOW, leeway=30
    )
    return VERIFY_RESULT[verdict.reason]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=headers,
    payload=st.one_of(payloads(), payloads(), json_value),
    signed=st.sampled_from([True, True, True, False]),
    audience=st.sampled_from(["orders", "billing"]),
)
def test_same_verdict_as_the_server_code_for_arbitrary_signed_tokens(
    shared: _Shared, header: Any, payload: Any, signed: bool, audience: str
) -> None:
    body = json.dumps(payload).encode()
    token = sign_raw(_KEY, header, body) if signed else forge(header, payload, b"x" * 64)
    expected = _server_verdict(token, audience)
    local = shared.verify(token, audience)
    assert local.reason == expected, (header, payload, local)
    if local.valid:
        assert local.claims is not None
        assert not math.isnan(local.claims.expires_at)
