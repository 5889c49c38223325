"""The fast paths of verification give the verdicts of the plain one, attack by attack.

A cache miss skips what it can prove it need not redo: the header of a key's tokens is
parsed once (a bounded memo), signatures go to ``cryptography`` directly rather than
through PyJWT's algorithm objects, ``{"``-led payloads skip json's encoding guess, and
the Verify response is built in one constructor call. Each is held here to the plain
path: the same reason, detail and claims for every token of the attack corpus, for every
algorithm, on a cache miss and on a hit. No timing is asserted anywhere.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from authority.api.convert import verify_response
from authority.domain.keys import Algorithm
from authority.domain.revocation import Revocation, RevocationKind
from authority.domain.tokens import AccessClaims, Verification, VerifyReason, check_claims
from authority.jose import _rfc7515, _rfc7518, _rfc9068
from authority.jose._rfc7493 import LoneSurrogateError
from authority.jose.claims import REGISTERED_CLAIMS, ClaimsError, parse_claims
from authority.jose.jws import ALGORITHMS, lone_surrogate_in_text, parse_compact
from authority.tokens.verifier import TokenVerifier
from authority.v1 import token_pb2
from tests.unit.test_verify import (
    ISSUER,
    LEEWAY,
    Fixture,
    attack_cases,
    lone_surrogate_cases,
    sign_raw,
    surrogate_near_misses,
)

Outcome = tuple[VerifyReason, str, AccessClaims | None]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def corpus(fx: Fixture) -> Iterator[str]:
    """The attack corpus, every algorithm confusion, and signed payloads of every shape."""
    yield from attack_cases(fx)
    yield from (token for token, _ in lone_surrogate_cases(fx).values())
    yield from surrogate_near_misses(fx).values()
    token = fx.token()
    yield token
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    for alg in ("none", "HS256", "EdDSA", "ES256", "RS256", "PS256", "", None, 7):
        forged = _b64(json.dumps({**header, "alg": alg}).encode())
        yield f"{forged}.{payload_b64}.{signature_b64}"
        yield _b64(json.dumps({**header, "alg": alg, "typ": "JWT"}).encode()) + "." + payload_b64
    claims = json.dumps(fx.claims())
    for payload in (
        claims.encode(),
        claims.encode("utf-16"),
        claims.encode("utf-32-le"),
        b"\xef\xbb\xbf" + claims.encode(),
        b" " + claims.encode(),
        claims.encode()[:-1] + b',"x":"\xff"}',
        claims.encode()[:-1] + b',"x":"\\ud800"}',
        claims.encode() + b"x",
        b'{"',
        b"[]",
        b"",
        b"null",
    ):
        yield sign_raw(fx, header, payload)
    for overrides in (
        {"exp": "tomorrow"},
        {"exp": True},
        {"exp": 1e300},
        {"iat": 1.5},
        {"sub": None},
        {"aud": 7},
        {"aud": []},
        {"aud": ["api", 3]},
        {"jti": ""},
        {"scope": ["a"]},
        {"iss": "https://evil"},
        {"aud": "billing"},
        {"exp": int(fx.clock.timestamp()) - 3600},
        {"nbf": int(fx.clock.timestamp()) + 3600},
        {"team": "blue", "scope": "read write"},
    ):
        yield fx.token(**overrides)


def _outcome(verdict: Verification) -> Outcome:
    return verdict.reason, verdict.detail, verdict.claims


def _plain_verify(algorithm: str, message: bytes, key: Any, signature: bytes) -> bool:
    return ALGORITHMS[algorithm].verify(message, key, signature)


def _not_utf8(document: Any) -> bool:
    """A lone surrogate somewhere in ``document``: it does not re-encode as UTF-8."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _i_json_loads(data: bytes) -> Any:
    """The payload decoder's reference: json.loads on the bytes, then I-JSON as far as
    lone surrogates go, judged by re-encoding the whole document."""
    document = json.loads(data)
    if _not_utf8(document):
        raise LoneSurrogateError("a string holds a lone surrogate")
    return document


def _plain(patch: pytest.MonkeyPatch) -> None:
    """Every fast path of the JOSE core off: PyJWT's algorithm objects, json.loads on
    bytes (I-JSON judged by re-encoding), and a header memo that remembers nothing."""
    patch.setattr(_rfc7515, "_verify", _plain_verify)
    patch.setattr(_rfc7515, "_json_document", _i_json_loads)
    patch.setattr(_rfc7515, "HEADER_MEMO_SIZE", 0)
    _rfc7515._headers.clear()


@pytest.fixture(autouse=True)
def _forget_headers() -> Iterator[None]:
    _rfc7515._headers.clear()
    yield
    _rfc7515._headers.clear()


def _verdicts(fx: Fixture, tokens: list[str], audiences: tuple[str, ...] = ()) -> list[Outcome]:
    return [_outcome(fx.verifier.verify(token, audiences)) for token in tokens]


def _uncached(fx: Fixture) -> TokenVerifier:
    return TokenVerifier(
        keys=lambda: fx.keys,
        issuer=ISSUER,
        default_audience="api",
        leeway=LEEWAY,
        max_token_bytes=4096,
        revocations=fx.revocations,
        clock=fx.clock,
        cache_size=1,
    )


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_fast_paths_give_the_plain_verdicts_over_the_attack_corpus(
    algorithm: Algorithm, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx = Fixture(algorithm)
    public_key = fx.keys[fx.kid].public_key
    # the fast path is the one under test: cryptography directly, not PyJWT's object
    assert _rfc7518.primitive(algorithm.value, public_key) != ALGORITHMS[algorithm.value].verify
    tokens = list(corpus(fx))
    fast_miss = _verdicts(fx, tokens)
    fast_hit = _verdicts(fx, tokens)  # the valid ones now come from the cache
    for audiences in ((), ("billing",), ("api", "billing")):
        fx.verifier = _uncached(fx)
        uncached = _verdicts(fx, tokens, audiences)
        with monkeypatch.context() as patch:
            _plain(patch)
            plain = _verdicts(fx, tokens, audiences)
        _rfc7515._headers.clear()
        assert uncached == plain, audiences
    fx.verifier = _uncached(fx)
    assert fast_miss == fast_hit == _verdicts(fx, tokens)
    reasons = {reason for reason, _, _ in fast_miss}
    assert VerifyReason.VALID in reasons and VerifyReason.DISALLOWED_ALGORITHM in reasons
    # Every valid verdict can be answered: its claims are UTF-8 through and through.
    for reason, _, claims in fast_miss:
        if reason is VerifyReason.VALID:
            assert claims is not None
            assert not _not_utf8(dict(claims.extra)), claims
            verify_response(Verification(reason, claims=claims)).SerializeToString()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_cache_hit_still_sees_revocation_expiry_and_key_removal(
    algorithm: Algorithm, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not fast:
        _plain(monkeypatch)
    fx = Fixture(algorithm)
    token = fx.token()
    assert fx.verifier.verify(token).valid
    assert fx.verifier.verify(token).valid  # a hit
    now = fx.clock.timestamp()
    fx.revocations.add(Revocation(RevocationKind.TOKEN, "j1", now, now + 600))
    assert fx.verifier.verify(token).reason is VerifyReason.REVOKED
    other = fx.token(jti="j2")
    assert fx.verifier.verify(other).valid
    fx.clock.advance(timedelta(seconds=600 + LEEWAY))
    assert fx.verifier.verify(other).reason is VerifyReason.EXPIRED
    fresh = fx.token(jti="j3")
    assert fx.verifier.verify(fresh).valid
    fx.keys.clear()
    assert fx.verifier.verify(fresh).reason is VerifyReason.UNKNOWN_KEY


def test_a_cache_hit_gives_the_uncached_verdict_at_every_bound() -> None:
    """A hit answers from what its entry keeps (the VALID verdict, the time bounds, the
    issuer and default audience): at each instant around nbf, iat and exp (with leeway),
    and for every audience list, it must say what a verifier without a cache says."""
    fx = Fixture(Algorithm.EDDSA)
    start = fx.clock.timestamp()
    tokens = [
        fx.token(nbf=int(start) + 100),
        fx.token(iat=start + 200.25, nbf=None),
        fx.token(exp=int(start) + 300),
        fx.token(iss="https://evil"),
        fx.token(aud=["billing", "api"]),
        fx.token(aud="billing"),
    ]
    bounds = [start + 100 - LEEWAY, start + 200.25 - LEEWAY, start + 300 + LEEWAY]
    instants = sorted({start, *(b + d for b in bounds for d in (-1e-6, 0.0, 1e-6))})
    audiences_cases: list[tuple[str, ...]] = [(), ("api",), ("billing",), ("shop", "billing")]
    reasons = set()
    for instant in instants:
        fx.clock.set(datetime.fromtimestamp(instant, UTC))
        for audiences in audiences_cases:
            for token in tokens:
                cached = [_outcome(fx.verifier.verify(token, audiences)) for _ in range(2)]
                plain = _outcome(_uncached(fx).verify(token, audiences))
                assert cached == [plain, plain], (instant - start, audiences, token)
                reasons.add(plain[0])
    assert {
        VerifyReason.VALID,
        VerifyReason.NOT_YET_VALID,
        VerifyReason.EXPIRED,
        VerifyReason.WRONG_ISSUER,
        VerifyReason.WRONG_AUDIENCE,
    } <= reasons


def _check_claims_outcome(fx: Fixture, token: str, audiences: tuple[str, ...]) -> Outcome:
    """The verdict with no cache entry's comparisons: the signature (``signed_claims``),
    then ``check_claims`` and the revocation view, as the plain path runs them."""
    signed = _uncached(fx).signed_claims(token)
    if isinstance(signed, Verification):
        return _outcome(signed)
    verdict = check_claims(
        signed,
        issuer=ISSUER,
        audiences=frozenset(audiences) or frozenset({"api"}),
        now=fx.clock.timestamp(),
        leeway=LEEWAY,
    )
    if verdict.valid and fx.revocations.is_revoked(signed):
        return VerifyReason.REVOKED, "the token has been revoked", None
    return _outcome(verdict)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_cache_miss_gives_the_check_claims_verdict(algorithm: Algorithm) -> None:
    """A miss answers a valid token from the entry it stores (the hit's comparisons) and
    leaves anything else to ``check_claims``: over the corpus, at each instant around nbf,
    iat and exp, for every audience list and a revoked token, a verifier's first call says
    what the signature, ``check_claims`` and the revocation view say."""
    fx = Fixture(algorithm)
    start = fx.clock.timestamp()
    now = fx.clock.timestamp()
    fx.revocations.add(Revocation(RevocationKind.TOKEN, "revoked", now, now + 600))
    tokens = [
        *corpus(fx),
        fx.token(nbf=int(start) + 100),
        fx.token(iat=start + 200.25, nbf=None),
        fx.token(exp=int(start) + 300),
        fx.token(aud=["billing", "api"]),
        fx.token(jti="revoked"),
    ]
    bounds = [start + 100 - LEEWAY, start + 200.25 - LEEWAY, start + 300 + LEEWAY]
    instants = sorted({start, *(b + d for b in bounds for d in (-1e-6, 0.0, 1e-6))})
    reasons = set()
    for instant in instants:
        fx.clock.set(datetime.fromtimestamp(instant, UTC))
        for audiences in ((), ("api",), ("billing",), ("shop", "billing")):
            for token in tokens:
                expected = _check_claims_outcome(fx, token, audiences)
                assert _outcome(_uncached(fx).verify(token, audiences)) == expected, token
                reasons.add(expected[0])
    assert {
        VerifyReason.VALID,
        VerifyReason.REVOKED,
        VerifyReason.NOT_YET_VALID,
        VerifyReason.EXPIRED,
        VerifyReason.WRONG_ISSUER,
        VerifyReason.WRONG_AUDIENCE,
    } <= reasons


def test_the_header_memo_never_widens_an_allow_list() -> None:
    fx = Fixture(Algorithm.EDDSA)
    token = fx.token()
    assert not isinstance(parse_compact(token, max_bytes=4096), Verification)  # memoised
    for algorithms in ({"ES256"}, frozenset(), ("RS256", "ES256")):
        remembered = parse_compact(token, max_bytes=4096, algorithms=algorithms)
        _rfc7515._headers.clear()
        fresh = parse_compact(token, max_bytes=4096, algorithms=algorithms)
        assert remembered == fresh
        assert isinstance(fresh, Verification)
        assert fresh.reason is VerifyReason.DISALLOWED_ALGORITHM


def test_the_header_memo_is_bounded_and_keeps_admitting_our_header() -> None:
    fx = Fixture(Algorithm.EDDSA)
    token = fx.token()
    _, payload, signature = token.split(".")
    for i in range(3 * _rfc7515.HEADER_MEMO_SIZE):
        forged = _b64(json.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": f"k{i}"}).encode())
        assert fx.verifier.verify(f"{forged}.{payload}.{signature}").reason is (
            VerifyReason.UNKNOWN_KEY
        )
        assert len(_rfc7515._headers) <= _rfc7515.HEADER_MEMO_SIZE
        assert fx.verifier.verify(fx.token(jti=f"j{i}")).valid


def _plain_response(verdict: Verification) -> token_pb2.VerifyResponse:
    """The response as built before the one-call constructor: message by message."""
    claims = verdict.claims
    assert claims is not None
    micros = round(claims.issued_at * 1_000_000)
    message = token_pb2.Claims(
        issuer=claims.issuer,
        subject=claims.subject,
        audience=claims.audience,
        expires_at=Timestamp(seconds=claims.expires_at),
        issued_at=Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1_000),
        not_before=Timestamp(seconds=claims.not_before),
        token_id=claims.token_id,
        session_id=claims.session_id,
        client_id=claims.client_id,
        scope=claims.scope,
        key_id=claims.key_id,
    )
    if claims.extra:
        extra = Struct()
        extra.update(dict(claims.extra))
        message.extra.CopyFrom(extra)
    return token_pb2.VerifyResponse(result=token_pb2.VERIFY_RESULT_VALID, claims=message)


def test_the_verify_response_is_the_message_built_field_by_field() -> None:
    fx = Fixture(Algorithm.EDDSA)
    now = fx.clock.timestamp()
    for overrides in (
        {},
        {"scope": "read write", "team": "blue", "n": 3, "nested": {"a": [1, None]}},
        {"aud": ["api", "billing"], "sid": None},
        {"iat": now - 0.123456, "nbf": None},
    ):
        verdict = fx.verifier.verify(fx.token(**overrides))
        assert verdict.valid, overrides
        response = verify_response(verdict)
        assert response == _plain_response(verdict), overrides
        assert response.SerializeToString(deterministic=True) == _plain_response(
            verdict
        ).SerializeToString(deterministic=True)


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "api", "a b", "https://auth.example.test", "\u00e9"])
    | st.sampled_from([2**53, 2**53 - 1, -(2**53), 1 - 2**53, 2.0**53, 1e300, 0.5, True, 0])
)
_CLAIM_VALUES = _JSON_SCALARS | st.lists(_JSON_SCALARS, max_size=3)


_CLAIM_NAMES = sorted(REGISTERED_CLAIMS | {"team"})


@settings(max_examples=1500, deadline=None)
@example(payload={}, name="exp", value=2**53, typical=True)
@example(payload={}, name="exp", value=-(2**53), typical=True)
@example(payload={}, name="exp", value=2**53 - 1, typical=True)
@example(payload={}, name="exp", value=1.5, typical=True)
@example(payload={}, name="exp", value=True, typical=True)
@example(payload={}, name="nbf", value=2**53, typical=True)
@example(payload={}, name="nbf", value=None, typical=True)
@example(payload={}, name="iat", value=2.0**53, typical=True)
@example(payload={}, name="iat", value=float("nan"), typical=True)
@example(payload={}, name="iat", value=-(2**53), typical=True)
@example(payload={}, name="aud", value="", typical=True)
@example(payload={}, name="aud", value=["api"], typical=True)
@example(payload={}, name="sid", value="", typical=True)
@example(payload={}, name="client_id", value=None, typical=True)
@example(payload={}, name="iss", value="", typical=True)
@example(payload={}, name="scope", value=None, typical=True)
@given(
    st.dictionaries(st.sampled_from(_CLAIM_NAMES), _CLAIM_VALUES, max_size=12),
    st.sampled_from(_CLAIM_NAMES),
    _CLAIM_VALUES,
    st.booleans(),
)
def test_the_one_pass_claims_parser_agrees_with_the_claim_by_claim_one(
    payload: dict[str, Any], name: str, value: Any, typical: bool
) -> None:
    """Any payload: the same claims, or the same error, from both parsers."""
    if typical:  # well-formed but for one claim, so the one-pass path is tried often
        payload = {**Fixture().claims(), name: value}
    outcomes = []
    for parse in (parse_claims, _rfc9068._parse_claims_checked):
        try:
            outcomes.append(parse(payload, "kid"))
        except ClaimsError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def _loaded(data: bytes, load: Any) -> Any:
    """What ``load`` makes of ``data``: the document, or the kind of failure."""
    try:
        return ("ok", load(data))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc))


_DOCUMENT_TAILS = st.sampled_from(
    ["", " ", "\n", "\t \r\n", "x", "}", "{}", " 1", "\x00", "\u00e9"]
)


@settings(max_examples=500, deadline=None)
@example(body=b'{"a":1}', tail="")
@example(body=b'{"a":NaN,"b":-Infinity}', tail="")
@example(body=b'{"a":1', tail="")
@example(body=b'{"', tail="")
@example(body=b'{"a":"\\ud800"}', tail="")
@example(body=b'{"a":"\xff"}', tail="")
@example(body=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", tail="")
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=5), _CLAIM_VALUES, max_size=4).map(
            lambda d: json.dumps(d).encode()
        ),
        st.binary(max_size=40).map(lambda b: b'{"' + b),
    ),
    _DOCUMENT_TAILS,
)
def test_the_payload_decoder_is_json_loads(body: bytes, tail: str) -> None:
    """Any payload bytes: the document json.loads gives, or a failure where it fails (or
    where the document is not I-JSON: a lone surrogate)."""
    data = body + tail.encode()
    assert _loaded(data, _rfc7515._json_document) == _loaded(data, _i_json_loads)


# Text that is mostly the risky kind: surrogates (lone, paired, reversed), text that
# spells their escapes after a backslash, and characters whose UTF-8 opens with 0xED.
_RISKY_TEXT = st.lists(
    st.sampled_from(
        ["a", "\\", "\\ud800", "\\uDC00", "\ud800", "\udfff", "\ud83d\ude00", "\ude00\ud83d"]
    )
    | st.sampled_from(["\ud55c", "\ud7ff", "\ue000", "\U0001f600"])
    | st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=())
    | st.characters(),
    max_size=8,
).map("".join)
_RISKY_JSON = st.recursive(
    _RISKY_TEXT | st.integers() | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_RISKY_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=1000, deadline=None)
@example(document={"x": "\ud800"}, ascii_only=True, encoding="utf-8")
@example(document={"x": "\ud800"}, ascii_only=False, encoding="utf-8")
@example(document={"\udfff": 1}, ascii_only=True, encoding="utf-8")
@example(document={"x": "\\ud800"}, ascii_only=True, encoding="utf-8")
@example(document={"x": "\ud83d\ude00"}, ascii_only=True, encoding="utf-8")
@example(document={"x": "\ud55c"}, ascii_only=False, encoding="utf-8")
@example(document={"x": ["\ud800"]}, ascii_only=False, encoding="utf-16")
@given(
    _RISKY_JSON,
    st.booleans(),
    st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32-be", "utf-8-sig"]),
)
def test_the_i_json_check_is_re_encoding_as_utf8(
    document: Any, ascii_only: bool, encoding: str
) -> None:
    """Any document, spelled with escapes or with the surrogates' own bytes, in any encoding
    json reads: the decoder's quick scans never miss a lone surrogate, nor invent one."""
    raw = json.dumps(document, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    assert _loaded(raw, _rfc7515._json_document) == _loaded(raw, _i_json_loads)
    text = raw.decode("utf-8", "surrogatepass") if encoding == "utf-8" else None
    if text is not None:  # the LocalVerifier's fast path checks the text it decoded
        loaded = json.loads(text)
        assert lone_surrogate_in_text(text, loaded) is _not_utf8(loaded)


def test_slot_filled_values_are_the_dataclass_constructors() -> None:
    """``parse_claims``'s one pass, ``valid_verdict`` and ``parse_compact`` fill slots and
    assign ``__class__`` rather than call the frozen ``__init__``: each result must be an
    ordinary, frozen instance of the class, equal to the constructor's."""
    fx = Fixture(Algorithm.EDDSA)
    token = fx.token(scope="read write", team="blue")
    jws = parse_compact(token, max_bytes=4096)
    assert isinstance(jws, _rfc7515.CompactJws) and type(jws) is _rfc7515.CompactJws
    header, payload, signature = token.split(".")
    assert jws == _rfc7515.CompactJws(
        token, jws.kid, jws.algorithm, len(header) + 1 + len(payload), payload, signature
    )
    claims = parse_claims(json.loads(base64.urlsafe_b64decode(payload + "==")), fx.kid)
    assert type(claims) is AccessClaims
    assert claims == AccessClaims(**{f: getattr(claims, f) for f in AccessClaims.__slots__})
    verdict = check_claims(
        claims, issuer=ISSUER, audiences=frozenset({"api"}), now=fx.clock.timestamp(), leeway=0
    )
    plain = Verification(VerifyReason.VALID, claims=claims)
    assert type(verdict) is Verification and verdict == plain
    assert repr(verdict) == repr(plain)
    for value, field in ((jws, "kid"), (claims, "subject"), (verdict, "detail")):
        with pytest.raises(AttributeError):  # FrozenInstanceError is one
            setattr(value, field, "x")
