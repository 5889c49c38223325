"""Compact JWS for the server: sign (as PyJWT does), verify with the shared JOSE core.

Signing is the server's alone (the private key never leaves it); an ES256 signature is
normalised to low-S, so each token is one string. An Ed25519 token (the default key) is
built here: its protected header is the same for every token of a key, so it is encoded
once per key rather than per token, and the bytes are PyJWT's exactly (same JSON, same
deterministic signature, made by libsodium: ``authority.crypto.ed25519``); other keys go
through PyJWT. Verification is the JOSE core's (``authority.jose.jws``), which local
verifiers run too: parse once, look the key up by ``kid`` in our own key ring (the header
never chooses it), then check the signature.
PyJWT's ``decode`` is not used on the hot path: it parses the header twice when keys are
looked up by ``kid`` and checks base64url character by character in Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority.crypto.ed25519 import Ed25519Signer
from authority.domain.keys import Algorithm
from authority.domain.tokens import ACCESS_TOKEN_TYPE, AccessClaims, Verification
from authority.jose.jws import (
    UNPUBLISHED_KEY,
    b64url_decode,
    b64url_encode,
    parse_compact,
    to_low_s,
)
from authority.jose.jws import verify_signature as _verify_with_key

__all__ = [
    "SigningKey",
    "VerificationKey",
    "b64url_decode",
    "b64url_encode",
    "sign",
    "verify_signature",
]


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published public key: what a ``kid`` resolves to."""

    kid: str
    algorithm: Algorithm
    public_key: Any


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active key, with its private half (decrypted only in memory).

    An Ed25519 key also gets its libsodium signer here, once per key rather than per
    token (``signer``; None for other keys, which PyJWT signs).
    """

    kid: str
    algorithm: Algorithm
    private_key: Any
    signer: Ed25519Signer | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ed25519 = self.algorithm is Algorithm.EDDSA and isinstance(
            self.private_key, Ed25519PrivateKey
        )
        object.__setattr__(self, "signer", Ed25519Signer(self.private_key) if ed25519 else None)


# The encoded protected header per (kid, alg): a handful of keys in a process's life.
_HEADERS: dict[tuple[str, Algorithm], str] = {}
_MAX_HEADERS = 64
_INT_TIMES = ("exp", "iat", "nbf")


def protected_header(kid: str, algorithm: Algorithm) -> str:
    """The base64url header segment of every token ``kid`` signs (PyJWT's: sorted keys)."""
    segment = _HEADERS.get((kid, algorithm))
    if segment is None:
        header = {"alg": algorithm.value, "kid": kid, "typ": ACCESS_TOKEN_TYPE}
        segment = b64url_encode(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[(kid, algorithm)] = segment
    return segment


def sign(claims: Mapping[str, Any], key: SigningKey) -> str:
    """Encode and sign an access token (RFC 9068 header: typ at+jwt, kid, alg)."""
    signer = key.signer
    if (
        signer is not None
        and isinstance(claims.get("iss", ""), str)
        and all(type(claims.get(name, 0)) is int for name in _INT_TIMES)
    ):
        payload = b64url_encode(json.dumps(dict(claims), separators=(",", ":")).encode())
        signing_input = f"{protected_header(key.kid, key.algorithm)}.{payload}"
        return f"{signing_input}.{b64url_encode(signer.sign(signing_input.encode()))}"
    return _sign_with_pyjwt(claims, key)


def _sign_with_pyjwt(claims: Mapping[str, Any], key: SigningKey) -> str:
    token = jwt.encode(
        dict(claims),
        key.private_key,
        algorithm=key.algorithm.value,
        headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    if key.algorithm is Algorithm.ES256:  # the twin (r, n - s) would verify too
        signing_input, _, signature = token.rpartition(".")
        token = f"{signing_input}.{b64url_encode(to_low_s(b64url_decode(signature)))}"
    return token


def verify_signature(
    token: str, keys: Mapping[str, VerificationKey], *, max_bytes: int
) -> AccessClaims | Verification:
    """Check structure, header, key and signature; return the typed claims or a failure.

    Time, issuer and audience are checked separately (``check_claims``) so a cache
    of signature-checked tokens can re-run them on every use.
    """
    jws = parse_compact(token, max_bytes=max_bytes)
    if isinstance(jws, Verification):
        return jws
    key = keys.get(jws.kid)
    if key is None:
        return UNPUBLISHED_KEY
    return _verify_with_key(jws, key.algorithm, key.public_key)
