"""Signing: the Ed25519 fast path (header encoded once per key) makes PyJWT's bytes
exactly, and every algorithm's token verifies under its own key only."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from authority.crypto import generate_private_key, public_jwk
from authority.domain.keys import Algorithm
from authority.tokens.jws import (
    SigningKey,
    VerificationKey,
    _sign_with_pyjwt,
    b64url_decode,
    sign,
    verify_signature,
)

_KEYS = {alg: generate_private_key(alg) for alg in Algorithm}


def _signing(algorithm: Algorithm, kid: str = "") -> SigningKey:
    private = _KEYS[algorithm]
    return SigningKey(kid or public_jwk(private, algorithm)["kid"], algorithm, private)


def _claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "https://auth.example.test",
        "sub": "c_svc",
        "aud": ["api", "billing"],
        "exp": 1_900_000_600,
        "iat": 1_900_000_000,
        "nbf": 1_900_000_000,
        "jti": "j1",
        "client_id": "svc",
        "scope": "read write",
        **extra,
    }


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=10), _JSON, max_size=4), kid=st.text(max_size=20))
def test_ed25519_tokens_are_pyjwts_bytes(extra: dict[str, Any], kid: str) -> None:
    key = _signing(Algorithm.EDDSA, kid or "k")
    claims = {**extra, **_claims()}
    assert sign(claims, key) == _sign_with_pyjwt(claims, key)


def test_the_header_follows_the_key() -> None:
    first, second = _signing(Algorithm.EDDSA, "k1"), _signing(Algorithm.EDDSA, "k2")
    for key in (first, second, first):
        header = json.loads(b64url_decode(sign(_claims(), key).split(".")[0]))
        assert header == {"alg": "EdDSA", "kid": key.kid, "typ": "at+jwt"}


def test_unusual_claims_take_pyjwts_path() -> None:
    key = _signing(Algorithm.EDDSA)
    claims = _claims(exp=1_900_000_600.5)
    assert sign(claims, key) == _sign_with_pyjwt(claims, key)


def test_every_algorithm_verifies_under_its_own_key_only() -> None:
    for algorithm in Algorithm:
        key = _signing(algorithm)
        token = sign(_claims(), key)
        own = {key.kid: VerificationKey(key.kid, algorithm, _KEYS[algorithm].public_key())}
        claims = verify_signature(token, own, max_bytes=8192)
        assert getattr(claims, "subject", None) == "c_svc", (algorithm, claims)
        other = generate_private_key(algorithm).public_key()
        assert (
            getattr(
                verify_signature(
                    token, {key.kid: VerificationKey(key.kid, algorithm, other)}, max_bytes=8192
                ),
                "subject",
                None,
            )
            is None
        )
