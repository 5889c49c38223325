"""Cryptography for the authority: signing keys, JWK export, and envelope encryption at rest.

The only server package that imports ``cryptography.hazmat``: it owns key generation,
private keys, signing material and the KEK envelopes. Verification primitives (public
JWK parsing, signature checks, thumbprints) are the shared JOSE core's
(``authority.jose``, in the authority-client distribution), which imports hazmat for
public keys only; everything else goes through these two APIs.
"""

from authority.crypto.envelope import EnvelopeError, Kek, KekRing, envelope_kek_id
from authority.crypto.kek_source import load_kek
from authority.crypto.signing_keys import (
    PrivateKey,
    generate_private_key,
    jwk_thumbprint,
    private_key_from_bytes,
    private_key_to_bytes,
    public_jwk,
    public_key_from_jwk,
)
from authority.crypto.token_sealing import SealError, open_with_token, seal_for_token
from authority.jose.jwk import PublicKey

__all__ = [
    "EnvelopeError",
    "Kek",
    "KekRing",
    "PrivateKey",
    "PublicKey",
    "SealError",
    "envelope_kek_id",
    "generate_private_key",
    "jwk_thumbprint",
    "load_kek",
    "open_with_token",
    "private_key_from_bytes",
    "private_key_to_bytes",
    "public_jwk",
    "public_key_from_jwk",
    "seal_for_token",
]
