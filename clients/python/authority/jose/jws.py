"""Compact JWS verification (RFC 7515), the allowed algorithms (RFC 7518, RFC 8037) and
canonical base64url: ``parse_compact``, find the key by ``kid``, ``verify_signature``;
``verify_ed25519`` is its Ed25519 check on a raw 32-byte key (libsodium);
``lone_surrogate_in_text`` is its I-JSON check of a decoded payload (RFC 7493)."""

from authority.jose._rfc4648 import NonCanonicalError, b64url_decode, b64url_encode
from authority.jose._rfc7493 import lone_surrogate_in_text
from authority.jose._rfc7515 import UNPUBLISHED_KEY, CompactJws, parse_compact, verify_signature
from authority.jose._rfc7518 import (
    ALGORITHMS,
    P256_ORDER,
    SUPPORTED_ALGORITHMS,
    is_low_s,
    to_low_s,
)
from authority.jose._rfc8032 import verify_raw as verify_ed25519

__all__ = [
    "ALGORITHMS",
    "P256_ORDER",
    "SUPPORTED_ALGORITHMS",
    "UNPUBLISHED_KEY",
    "CompactJws",
    "NonCanonicalError",
    "b64url_decode",
    "b64url_encode",
    "is_low_s",
    "lone_surrogate_in_text",
    "parse_compact",
    "to_low_s",
    "verify_ed25519",
    "verify_signature",
]
