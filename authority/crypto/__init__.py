"""Cryptography for the authority: signing keys, JWKs, and envelope encryption at rest.

The only package that imports ``cryptography.hazmat``; everything else goes through
this API, so algorithm choices and key checks live in one reviewed place.
"""

from authority.crypto.envelope import EnvelopeError, Kek, KekRing, envelope_kek_id
from authority.crypto.kek_source import load_kek
from authority.crypto.low_s import is_low_s, to_low_s
from authority.crypto.signing_keys import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    jwk_thumbprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_jwk,
    public_key_from_jwk,
)
from authority.crypto.token_sealing import SealError, open_with_token, seal_for_token

__all__ = [
    "EnvelopeError",
    "Kek",
    "KekRing",
    "PrivateKey",
    "PublicKey",
    "SealError",
    "envelope_kek_id",
    "generate_private_key",
    "is_low_s",
    "jwk_thumbprint",
    "load_kek",
    "open_with_token",
    "private_key_from_bytes",
    "private_key_to_bytes",
    "public_jwk",
    "public_key_from_jwk",
    "seal_for_token",
    "to_low_s",
]
