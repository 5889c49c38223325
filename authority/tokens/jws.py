"""Compact JWS: sign with PyJWT, verify with one parse and PyJWT's algorithm objects.

Verification parses the token exactly once and never trusts the header alone:
the key is found by ``kid`` in our own key ring, and the header's ``alg`` must
equal that key's algorithm (which must be allow-listed). PyJWT's ``decode``
is not used on the hot path because it parses the header twice when keys are
looked up by ``kid`` and checks base64url character by character in Python;
``binascii`` in strict mode does the same check in C.

One token is one string: every segment must be canonical base64url (no set bits
in the unused tail, which strict ``binascii`` lets through), and an ES256
signature must be low-S. We sign that way, so only forged spellings are refused,
and anything keyed on the token string sees each token once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import Algorithm as JwtAlgorithm
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authority.crypto.low_s import is_low_s, to_low_s
from authority.domain.keys import Algorithm
from authority.domain.tokens import (
    ACCESS_TOKEN_TYPE,
    AccessClaims,
    ClaimsError,
    Verification,
    VerifyReason,
    parse_claims,
)

_ALGORITHMS: dict[str, JwtAlgorithm] = {
    Algorithm.EDDSA.value: OKPAlgorithm(),
    Algorithm.ES256.value: ECAlgorithm(ECAlgorithm.SHA256),
    Algorithm.RS256.value: RSAAlgorithm(RSAAlgorithm.SHA256),
}
_ES256 = Algorithm.ES256.value
# base64url -> standard alphabet; characters foreign to base64url become '!',
# which strict mode rejects.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# The last character of a canonical encoding, by length modulo 4: with 2 (3) characters
# in the last group, its low 4 (2) bits are unused and must be zero (RFC 4648 3.5).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


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


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Strict, canonical base64url: no padding, no foreign characters, no set bits in the
    unused tail (so exactly one string decodes to given bytes). Raises ValueError."""
    data = segment.encode("ascii")  # UnicodeEncodeError is a ValueError
    tail = _CANONICAL_LAST.get(len(data) % 4)
    if tail is not None and segment[-1] not in tail:
        raise ValueError("non-canonical base64url (unused trailing bits set)")
    padded = data.translate(_TO_STANDARD) + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64url") from exc


def _fail(reason: VerifyReason, detail: str) -> Verification:
    return Verification(reason, detail)


def verify_signature(
    token: str, keys: Mapping[str, VerificationKey], *, max_bytes: int
) -> AccessClaims | Verification:
    """Check structure, header, key and signature; return the typed claims or a failure.

    Time, issuer and audience are checked separately (``check_claims``) so a cache
    of signature-checked tokens can re-run them on every use.
    """
    if len(token) > max_bytes:
        return _fail(VerifyReason.TOO_LARGE, f"the token is larger than {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        return _fail(VerifyReason.MALFORMED, "not a compact JWS (three dot-separated parts)")
    header_segment, payload_segment, signature_segment = parts
    try:
        header = json.loads(b64url_decode(header_segment))
    except (ValueError, RecursionError):
        return _fail(VerifyReason.MALFORMED, "the header is not base64url-encoded JSON")
    if not isinstance(header, dict):
        return _fail(VerifyReason.MALFORMED, "the header is not a JSON object")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in _ALGORITHMS:
        return _fail(VerifyReason.DISALLOWED_ALGORITHM, f"algorithm {algorithm!r} is not allowed")
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        return _fail(VerifyReason.WRONG_TYPE, "the token is not an access token (typ at+jwt)")
    if "crit" in header:
        return _fail(VerifyReason.MALFORMED, "critical header extensions are not supported")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return _fail(VerifyReason.UNKNOWN_KEY, "the token's key id is not published")
    if key.algorithm.value != algorithm:
        return _fail(
            VerifyReason.DISALLOWED_ALGORITHM, "the token's algorithm does not match its key"
        )
    try:
        signature = b64url_decode(signature_segment)
    except ValueError:
        return _fail(VerifyReason.MALFORMED, "the signature is not canonical base64url")
    if algorithm == _ES256 and not is_low_s(signature):
        return _fail(VerifyReason.BAD_SIGNATURE, "the signature is not low-S")
    try:
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
    except UnicodeEncodeError:
        return _fail(VerifyReason.MALFORMED, "the claims are not base64url-encoded JSON")
    if not _ALGORITHMS[algorithm].verify(signing_input, key.public_key, signature):
        return _fail(VerifyReason.BAD_SIGNATURE, "the signature does not match")
    try:
        return parse_claims(json.loads(b64url_decode(payload_segment)), key.kid)
    except ClaimsError as exc:
        return _fail(VerifyReason.MALFORMED, f"malformed claims: {exc}")
    except (ValueError, RecursionError):
        return _fail(VerifyReason.MALFORMED, "the claims are not base64url-encoded JSON")
