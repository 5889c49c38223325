"""The allowed JWS algorithms (RFC 7518 section 3, RFC 8037) and low-S ES256.

An ECDSA signature (r, s) has a twin (r, n - s) that verifies just as well. The authority
signs with the lower of the two and every verifier refuses the higher, so one token is one
string. Signatures here are JOSE's raw ``r || s``.
"""

from __future__ import annotations

from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SUPPORTED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
# PyJWT's algorithm objects: one parse of the token is ours, the primitive is theirs.
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
