"""Token verification in process: the parser never raises, every attack has its reason,
and the verified-token cache never outlives a key, a claim check or a revocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.crypto import generate_private_key, public_jwk
from authority.domain.clock import ManualClock
from authority.domain.keys import Algorithm
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.domain.tokens import AccessClaims, Verification, VerifyReason
from authority.jose.jws import to_low_s
from authority.tokens.jws import SigningKey, VerificationKey, b64url_decode, sign
from authority.tokens.verifier import TokenVerifier

ISSUER = "https://auth.example.test"
LEEWAY = 30.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Fixture:
    def __init__(self, algorithm: Algorithm = Algorithm.EDDSA) -> None:
        self.clock = ManualClock()
        self.private = generate_private_key(algorithm)
        self.jwk = public_jwk(self.private, algorithm)
        self.kid = self.jwk["kid"]
        self.signing = SigningKey(self.kid, algorithm, self.private)
        self.keys: dict[str, VerificationKey] = {
            self.kid: VerificationKey(self.kid, algorithm, self.private.public_key())
        }
        self.revocations = RevocationSet()
        self.verifier = TokenVerifier(
            keys=lambda: self.keys,
            issuer=ISSUER,
            default_audience="api",
            leeway=LEEWAY,
            max_token_bytes=4096,
            revocations=self.revocations,
            clock=self.clock,
            cache_size=100,
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.timestamp())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "p_1",
            "aud": "api",
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "jti": "j1",
            "sid": "s1",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, **overrides: Any) -> str:
        return sign(self.claims(**overrides), self.signing)


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_fresh_token_is_valid_with_typed_claims(algorithm: Algorithm) -> None:
    fx = Fixture(algorithm)
    verdict = fx.verifier.verify(fx.token(scope="read write", team="blue"))
    assert verdict.reason is VerifyReason.VALID
    assert verdict.claims is not None
    assert verdict.claims.subject == "p_1"
    assert verdict.claims.scope == ("read", "write")
    assert verdict.claims.extra == {"team": "blue"}
    assert verdict.claims.key_id == fx.kid


def test_time_checks_honour_the_leeway(fx: Fixture) -> None:
    token = fx.token()
    fx.clock.advance(timedelta(seconds=600 + LEEWAY - 1))
    assert fx.verifier.verify(token).valid
    fx.clock.advance(timedelta(seconds=1))
    assert fx.verifier.verify(token).reason is VerifyReason.EXPIRED
    now = int(fx.clock.timestamp())
    early = fx.token(nbf=now + int(LEEWAY) + 5)
    assert fx.verifier.verify(early).reason is VerifyReason.NOT_YET_VALID
    fx.clock.advance(timedelta(seconds=6))
    assert fx.verifier.verify(early).valid


def test_issuer_and_audience_are_checked(fx: Fixture) -> None:
    assert fx.verifier.verify(fx.token(iss="https://evil")).reason is VerifyReason.WRONG_ISSUER
    token = fx.token(aud=["orders", "billing"])
    assert fx.verifier.verify(token).reason is VerifyReason.WRONG_AUDIENCE
    assert fx.verifier.verify(token, ["billing"]).valid
    # the cache must not remember an audience decision
    assert fx.verifier.verify(token, ["shipping"]).reason is VerifyReason.WRONG_AUDIENCE


def attack_cases(fx: Fixture) -> dict[str, VerifyReason]:
    """Forgeries of ``fx``'s tokens (alg none, algorithm confusion, unknown kid, ...) and the
    reason each must get: the corpus every verification path is held to."""
    token = fx.token()
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    # HS256 keyed with the public key's bytes: the classic algorithm confusion.
    public_raw = base64.urlsafe_b64decode(fx.jwk.get("x", fx.jwk.get("n", "")) + "==")

    def with_header(**changes: Any) -> str:
        return ".".join(
            [_b64(json.dumps({**header, **changes}).encode()), payload_b64, signature_b64]
        )

    hs_header = _b64(json.dumps({**header, "alg": "HS256"}).encode())
    mac = hmac.new(public_raw, f"{hs_header}.{payload_b64}".encode(), hashlib.sha256).digest()
    tampered = _b64(json.dumps({**fx.claims(), "sub": "admin"}).encode())
    cases = {
        with_header(alg="none")[: -len(signature_b64)]: VerifyReason.DISALLOWED_ALGORITHM,
        with_header(alg="HS256"): VerifyReason.DISALLOWED_ALGORITHM,
        f"{hs_header}.{payload_b64}.{_b64(mac)}": VerifyReason.DISALLOWED_ALGORITHM,
        with_header(alg="ES256"): VerifyReason.DISALLOWED_ALGORITHM,  # not this key's algorithm
        with_header(kid="unknown"): VerifyReason.UNKNOWN_KEY,
        with_header(kid=None): VerifyReason.UNKNOWN_KEY,
        with_header(typ="JWT"): VerifyReason.WRONG_TYPE,
        with_header(crit=["exp"]): VerifyReason.MALFORMED,
        f"{header_b64}.{tampered}.{signature_b64}": VerifyReason.BAD_SIGNATURE,
        f"{header_b64}.{payload_b64}.{signature_b64[:-4]}AAAA": VerifyReason.BAD_SIGNATURE,
        f"{header_b64}.{payload_b64}.{signature_b64}=": VerifyReason.MALFORMED,
        f"{header_b64}.{payload_b64}+.{signature_b64}": VerifyReason.BAD_SIGNATURE,
        f"{header_b64}.{payload_b64}\u00e9.{signature_b64}": VerifyReason.MALFORMED,
        token + "." + signature_b64: VerifyReason.MALFORMED,
        token + "A" * 5000: VerifyReason.TOO_LARGE,
        "": VerifyReason.MALFORMED,
        "a.b.c": VerifyReason.MALFORMED,
        "[" * 3000 + ".a.b": VerifyReason.MALFORMED,
    }
    return cases


def test_attack_tokens(fx: Fixture) -> None:
    for attack, reason in attack_cases(fx).items():
        verdict = fx.verifier.verify(attack)
        assert verdict.reason is reason, attack[:80]
        assert verdict.claims is None
        assert verdict.detail


def sign_raw(fx: Fixture, header: dict[str, Any], payload: bytes) -> str:
    """A token over arbitrary header and payload bytes, validly signed by ``fx``'s key."""
    h, p = _b64(json.dumps(header).encode()), _b64(payload)
    algorithm = jwt.get_algorithm_by_name(fx.signing.algorithm.value)
    signature = algorithm.sign(f"{h}.{p}".encode(), fx.private)
    if fx.signing.algorithm is Algorithm.ES256:
        signature = to_low_s(signature)
    return f"{h}.{p}.{_b64(signature)}"


PAYLOAD_NOT_I_JSON = "malformed claims: a string holds a lone UTF-16 surrogate (not I-JSON)"
HEADER_NOT_I_JSON = "the header holds a lone UTF-16 surrogate (not I-JSON)"


def lone_surrogate_cases(fx: Fixture) -> dict[str, tuple[str, str]]:
    """name -> (token, detail): tokens validly signed by ``fx``'s key whose JSON holds a
    lone UTF-16 surrogate (Python's json takes them; I-JSON, RFC 7493, does not), each
    MALFORMED with ``detail``. Near misses are in ``surrogate_near_misses``."""
    header = {"alg": fx.signing.algorithm.value, "kid": fx.kid, "typ": "at+jwt"}
    body = json.dumps(fx.claims()).encode()

    def extra(member: bytes) -> str:
        return sign_raw(fx, header, body[:-1] + b", " + member + b"}")

    payloads = {
        "an escaped high surrogate": extra(b'"x": "\\ud800"'),
        "an escaped low surrogate, upper case": extra(b'"x": "\\uDFFF"'),
        "a surrogate's own bytes (CESU-8)": extra(b'"x": "\xed\xa0\x80"'),
        "a pair's own bytes (CESU-8)": extra(b'"x": "\xed\xa0\xbd\xed\xb8\x80"'),
        "an escaped pair reversed": extra(b'"x": "\\ude00\\ud83d"'),
        "an escaped high surrogate before a letter": extra(b'"x": "a\\ud83dz"'),
        "an escaped high surrogate, then a low one's bytes": extra(b'"x": "\\ud83d\xed\xb8\x80"'),
        "in a member name": extra(b'"\\ud800": 1'),
        "nested in act": extra(b'"act": {"sub": "p_2", "act": {"sub": ["\\udc00"]}}'),
        "in sub": fx.token(sub="p_\ud800"),
        "in an extra claim, as sign() writes it": fx.token(team="\udbff"),
        "in UTF-16": sign_raw(
            fx,
            header,
            json.dumps({**fx.claims(), "x": "\ud800"}, ensure_ascii=False).encode(
                "utf-16", "surrogatepass"
            ),
        ),
    }
    headers = {
        "in the header's kid": sign_raw(fx, {**header, "kid": "\ud800"}, body),
        "in a header member": sign_raw(fx, {**header, "x": "\udfff"}, body),
    }
    return {
        **{name: (token, PAYLOAD_NOT_I_JSON) for name, token in payloads.items()},
        **{name: (token, HEADER_NOT_I_JSON) for name, token in headers.items()},
    }


def surrogate_near_misses(fx: Fixture) -> dict[str, str]:
    """Tokens that look like ``lone_surrogate_cases`` to a byte search but are I-JSON."""
    header = {"alg": fx.signing.algorithm.value, "kid": fx.kid, "typ": "at+jwt"}
    body = json.dumps(fx.claims()).encode()

    def extra(member: bytes) -> str:
        return sign_raw(fx, header, body[:-1] + b", " + member + b"}")

    return {
        "an escaped pair": extra(b'"x": "\\ud83d\\ude00"'),
        "an escaped backslash, then ud800": extra(b'"x": "\\\\ud800"'),
        "Hangul, whose bytes open with 0xED": extra('"x": "\ud55c"'.encode()),
        "an escaped e-acute": extra(b'"x": "\\u00e9"'),
        "an emoji, as sign() writes it": fx.token(team="\U0001f600"),
    }


def test_a_lone_surrogate_anywhere_is_malformed(fx: Fixture) -> None:
    for name, (token, detail) in lone_surrogate_cases(fx).items():
        for _ in range(2):  # a second sighting: nothing was cached, no header remembered
            verdict = fx.verifier.verify(token)
            assert (verdict.reason, verdict.detail, verdict.claims) == (
                VerifyReason.MALFORMED,
                detail,
                None,
            ), name
        assert fx.verifier.signed_claims(token) == verdict, name
    for name, token in surrogate_near_misses(fx).items():
        verdict = fx.verifier.verify(token)
        assert verdict.valid, (name, verdict)
        assert verdict.claims is not None
        for value in verdict.claims.extra.values():
            value.encode("utf-8")


def test_a_signed_payload_with_the_wrong_shape_is_malformed(fx: Fixture) -> None:
    for overrides in (
        {"exp": "tomorrow"},
        {"exp": True},
        {"sub": None},
        {"aud": 7},
        {"aud": []},
        {"jti": ""},
        {"scope": ["a"]},
    ):
        verdict = fx.verifier.verify(fx.token(**overrides))
        assert verdict.reason is VerifyReason.MALFORMED, overrides


def test_the_cache_never_outlives_a_compromised_key(fx: Fixture) -> None:
    token = fx.token()
    assert fx.verifier.verify(token).valid
    assert fx.verifier.cached == 1
    fx.keys.clear()  # the key was compromised and left the ring
    assert fx.verifier.verify(token).reason is VerifyReason.UNKNOWN_KEY


def test_revocation_applies_to_cached_tokens(fx: Fixture) -> None:
    token = fx.token()
    assert fx.verifier.verify(token).valid
    now = fx.clock.timestamp()
    fx.revocations.add(Revocation(RevocationKind.SESSION, "s1", now, now + 600))
    assert fx.verifier.verify(token).reason is VerifyReason.REVOKED
    later = fx.clock.timestamp()
    fx.clock.advance(timedelta(seconds=1))
    newer = fx.token(jti="j2", sid="s2")
    assert fx.verifier.verify(newer).valid
    fx.revocations.add(Revocation(RevocationKind.SUBJECT, "p_1", later, later + 600))
    assert fx.verifier.verify(newer).valid  # issued after the subject's not-before
    assert fx.verifier.verify(fx.token(jti="j3", sid="s3", iat=int(later) - 1)).reason is (
        VerifyReason.REVOKED
    )


def test_revocations_expire_so_the_set_stays_bounded() -> None:
    revocations = RevocationSet()
    for i in range(100):
        revocations.add(Revocation(RevocationKind.TOKEN, f"j{i}", 0, expires_at=float(i)))
    assert revocations.expire(49.5) == 50
    assert len(revocations) == 50


def test_the_cache_is_bounded(fx: Fixture) -> None:
    for i in range(250):
        assert fx.verifier.verify(fx.token(jti=f"j{i}")).valid
    assert fx.verifier.cached <= 100


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(_b64))
def test_verify_answers_a_reason_for_any_input(text: str) -> None:
    verdict = FIXTURE.verifier.verify(text)
    assert verdict.reason is not VerifyReason.VALID


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    token = FIXTURE_TOKEN
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCxyz012-_.=+/ \u00e9\u2603"))
    mutated = token[:position] + replacement + token[position + 1 :]
    if mutated == token:
        return
    verdict = FIXTURE.verifier.verify(mutated)
    if verdict.valid:
        # base64url's last character carries spare bits: only a change that decodes
        # to the very same bytes may pass.
        original = [b64url_decode(p) for p in token.split(".")]
        assert [b64url_decode(p) for p in mutated.split(".")] == original


FIXTURE = Fixture()
FIXTURE_TOKEN = FIXTURE.token()


def test_signed_claims_is_the_signature_step_of_verify(fx: Fixture) -> None:
    """Revoke-by-token asks only "is this ours, and what is its jti": a token of another
    audience is ours; a token signed by an unpublished key, or tampered with, is not."""
    foreign = fx.token(aud="billing", jti="j-foreign")
    assert fx.verifier.verify(foreign).reason is VerifyReason.WRONG_AUDIENCE
    claims = fx.verifier.signed_claims(foreign)
    assert isinstance(claims, AccessClaims) and claims.token_id == "j-foreign"
    header, _, signature = fx.token().split(".")
    tampered = ".".join((header, _b64(b'{"sub":"p_2"}'), signature))
    assert isinstance(fx.verifier.signed_claims(tampered), Verification)
    token = fx.token()
    fx.keys.clear()  # the key is withdrawn: its tokens are no longer ours, cached or not
    assert isinstance(fx.verifier.signed_claims(token), Verification)
    assert isinstance(fx.verifier.signed_claims(foreign), Verification)
