"""The allowed JWS algorithms (RFC 7518 section 3, RFC 8037) and low-S ES256.

An ECDSA signature (r, s) has a twin (r, n - s) that verifies just as well. The authority
signs with the lower of the two and every verifier refuses the higher, so one token is one
string. Signatures here are JOSE's raw ``r || s``.

``verify`` calls ``cryptography`` directly for the public-key types it knows, exactly as
PyJWT's algorithm objects do (same conversions, same failure on ``InvalidSignature``) but
without their per-call isinstance checks against abstract classes: on a cache miss, that
wrapper cost a measurable share of a signature check. Any other key type still goes
through PyJWT's object, so the verdict never depends on which path ran. Ed25519 is
checked by libsodium (``_rfc8032``: half OpenSSL's CPU, the same verdicts for our keys);
ES256 and RS256 stay on ``cryptography``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authority.jose._rfc8032 import verify as verify_ed25519

SUPPORTED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
# PyJWT's algorithm objects: the reference for ``verify``, and its path for unknown key types.
ALGORITHMS: dict[str, Algorithm] = {
    "EdDSA": OKPAlgorithm(),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
}

# The order of the P-256 group (FIPS 186-4, D.1.2.3).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER = P256_ORDER // 2
_COORDINATE_BYTES = 32


def is_low_s(signature: bytes) -> bool:
    """True for a 64-byte raw P-256 signature whose ``s`` is at most n/2."""
    if len(signature) != 2 * _COORDINATE_BYTES:
        return False
    return int.from_bytes(signature[_COORDINATE_BYTES:], "big") <= _HALF_ORDER


def to_low_s(signature: bytes) -> bytes:
    """The low-S twin of a 64-byte raw P-256 signature (itself when already low)."""
    if len(signature) != 2 * _COORDINATE_BYTES:
        raise ValueError("not a raw P-256 signature (r || s, 64 bytes)")
    s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
    if s <= _HALF_ORDER:
        return signature
    return signature[:_COORDINATE_BYTES] + (P256_ORDER - s).to_bytes(_COORDINATE_BYTES, "big")


# -- verification -----------------------------------------------------------------------

Primitive = Callable[[bytes, Any, bytes], bool]
# Stateless parameter objects, built once rather than per call as PyJWT does.
_ECDSA_SHA256 = ec.ECDSA(SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = SHA256()


def _es256(message: bytes, key: ec.EllipticCurvePublicKey, signature: bytes) -> bool:
    size = (key.curve.key_size + 7) // 8  # PyJWT's raw_to_der_signature, inlined
    if len(signature) != 2 * size:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    try:
        key.verify(der, message, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _rs256(message: bytes, key: rsa.RSAPublicKey, signature: bytes) -> bool:
    try:
        key.verify(signature, message, _PKCS1V15, _SHA256)
    except InvalidSignature:
        return False
    return True


_DIRECT: dict[str, tuple[type, Primitive]] = {
    "EdDSA": (Ed25519PublicKey, verify_ed25519),
    "ES256": (ec.EllipticCurvePublicKey, _es256),
    "RS256": (rsa.RSAPublicKey, _rs256),
}
# (algorithm, concrete key class) -> the primitive: one isinstance check per class, ever.
_RESOLVED: dict[tuple[str, type], Primitive] = {}


def primitive(algorithm: str, key: Any) -> Primitive:
    """The signature check for ``algorithm`` with ``key`` (an allowed algorithm)."""
    kind = type(key)
    found = _RESOLVED.get((algorithm, kind))
    if found is None:
        expected, direct = _DIRECT[algorithm]
        found = direct if isinstance(key, expected) else ALGORITHMS[algorithm].verify
        _RESOLVED[algorithm, kind] = found
    return found


def verify(algorithm: str, message: bytes, key: Any, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s over ``message``, for an allowed ``algorithm``."""
    found = _RESOLVED.get((algorithm, type(key)))  # ``primitive``'s memo, one frame fewer
    if found is None:
        found = primitive(algorithm, key)
    return found(message, key, signature)
