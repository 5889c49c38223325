"""Signing: the Ed25519 fast path (header encoded once per key) makes PyJWT's bytes
exactly, and every algorithm's token verifies under its own key only."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.crypto import generate_private_key, public_jwk
from authority.crypto.ed25519 import Ed25519Signer
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


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=600))
def test_libsodium_signs_cryptographys_bytes(seed: bytes, message: bytes) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    assert Ed25519Signer(private).sign(message) == private.sign(message)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    extra=st.dictionaries(st.text(max_size=10), _JSON, max_size=3),
)
def test_ed25519_tokens_are_cryptographys_bytes_under_any_key(
    seed: bytes, extra: dict[str, Any]
) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    key = SigningKey("k", Algorithm.EDDSA, private)
    claims = {**extra, **_claims()}
    token = sign(claims, key)
    signing_input, _, signature = token.rpartition(".")
    assert b64url_decode(signature) == private.sign(signing_input.encode())
    assert token == _sign_with_pyjwt(claims, key)


def test_the_libsodium_signer_is_built_once_per_key_and_hides_its_secret() -> None:
    key = _signing(Algorithm.EDDSA)
    signer = key.signer
    assert signer is not None
    sign(_claims(), key)
    assert key.signer is signer  # per key, not per token
    seed = _KEYS[Algorithm.EDDSA].private_bytes_raw()
    for shown in (repr(key), str(key), repr(signer), str(signer)):
        assert seed.hex() not in shown and repr(seed) not in shown
        assert "libsodium" in shown or "Ed25519Signer" not in shown
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    for algorithm in (Algorithm.ES256, Algorithm.RS256):
        assert _signing(algorithm).signer is None  # these stay on cryptography via PyJWT
