"""JWK thumbprints (RFC 7638): the key id that no other key can claim."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from authority.jose._rfc4648 import b64url_encode


class JwkError(ValueError):
    """A JWK (or a JWKS document) is not acceptable."""


# The members RFC 7638 section 3.2 hashes, per key type.
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: required members only, sorted, no whitespace."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise JwkError(f"unsupported JWK key type {kty!r}")
    required: dict[str, str] = {}
    for member in _THUMBPRINT_MEMBERS[kty]:
        value = jwk.get(member)
        if not isinstance(value, str) or not value:
            raise JwkError(f"{kty} JWK lacks the string member {member!r}")
        required[member] = value
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
