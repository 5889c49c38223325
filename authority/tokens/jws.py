"""Compact JWS for the server: sign with PyJWT, verify with the shared JOSE core.

Signing is the server's alone (the private key never leaves it); an ES256 signature is
normalised to low-S, so each token is one string. Verification is the JOSE core's
(``authority.jose.jws``), which local verifiers run too: parse once, look the key up by
``kid`` in our own key ring (the header never chooses it), then check the signature.
PyJWT's ``decode`` is not used on the hot path: it parses the header twice when keys are
looked up by ``kid`` and checks base64url character by character in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

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
    """The active key, with its private half (decrypted only in memory)."""

    kid: str
    algorithm: Algorithm
    private_key: Any


def sign(claims: Mapping[str, Any], key: SigningKey) -> str:
    """Encode and sign an access token (RFC 9068 header: typ at+jwt, kid, alg)."""
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
