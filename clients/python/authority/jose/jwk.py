"""Public JWKs, parsed strictly (RFC 7517), and their RFC 7638 thumbprints."""

from authority.jose._rfc7517 import (
    ED25519_KEY_BYTES,
    P256_COORDINATE_BYTES,
    PRIVATE_MEMBERS,
    RSA_MAX_BITS,
    RSA_MIN_BITS,
    PublicJwk,
    PublicKey,
    parse_public_jwk,
)
from authority.jose._rfc7638 import JwkError, jwk_thumbprint

__all__ = [
    "ED25519_KEY_BYTES",
    "P256_COORDINATE_BYTES",
    "PRIVATE_MEMBERS",
    "RSA_MAX_BITS",
    "RSA_MIN_BITS",
    "JwkError",
    "PublicJwk",
    "PublicKey",
    "jwk_thumbprint",
    "parse_public_jwk",
]
