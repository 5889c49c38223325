"""Sealing data to a bearer token: only a holder of the token can open it.

The refresh service stores a consumed refresh token's successor pair sealed this
way, so that a retry within the grace window gets the identical pair back while
the database never holds a usable token: the key is derived (HKDF-SHA256) from
the presented token itself, which the database stores only as a SHA-256 digest.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authority.domain.errors import AuthorityError

_VERSION = b"\x01"
_INFO = b"authority refresh successor v1"
_NONCE_BYTES = 12


class SealError(AuthorityError):
    """The sealed data does not open with this token (wrong token, or tampered)."""


def _key(token: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        token.encode("utf-8")
    )
    return AESGCM(derived)


def seal_for_token(token: str, plaintext: bytes, *, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _VERSION + nonce + _key(token).encrypt(nonce, plaintext, _VERSION + aad)


def open_with_token(token: str, sealed: bytes, *, aad: bytes) -> bytes:
    if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
        raise SealError("the sealed data is malformed")
    nonce = sealed[1 : 1 + _NONCE_BYTES]
    try:
        return _key(token).decrypt(nonce, sealed[1 + _NONCE_BYTES :], _VERSION + aad)
    except InvalidTag as exc:
        raise SealError("the sealed data does not open with this token") from exc
