"""Envelope encryption of private keys at rest under a key-encryption key (KEK).

Each blob gets its own random data key (DEK): the payload is sealed with the DEK
and the DEK with the KEK, both with AES-256-GCM. Rotating the KEK then means
re-wrapping, and the blob names the KEK that sealed it, so a ring of old and new
KEKs can open everything while only the newest seals (like ``MultiFernet``).

Blob layout, version 1 (all lengths in bytes)::

    magic "AKE" (3) | version 0x01 (1) | len(kek_id) (1) | kek_id (ASCII)
    | kek_nonce (12) | wrapped DEK (32 + 16 tag) | dek_nonce (12) | ciphertext (n + 16 tag)

The header (everything up to and including the KEK id) and the caller's ``aad``
are authenticated by both layers, under distinct labels so the layers cannot be
swapped for one another.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authority.domain.errors import AuthorityError, ErrorCode, InvalidArgument

KEK_BYTES = 32
DEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_DEK_BYTES = DEK_BYTES + TAG_BYTES

MAGIC = b"AKE"
VERSION_1 = 1
_KEK_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_DEK_LABEL = b"authority/envelope/v1/dek\x00"
_DATA_LABEL = b"authority/envelope/v1/data\x00"
_KEK_ID_LABEL = b"authority-kek-id:"


class EnvelopeError(AuthorityError):
    """A blob cannot be opened: it is damaged, or sealed under a KEK we do not hold.

    INTERNAL rather than a client error: blobs only come from our own store.
    """

    code = ErrorCode.INTERNAL


@dataclass(frozen=True)
class Kek:
    """A 32-byte key-encryption key and a public id that names it (the repr hides the secret)."""

    id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _KEK_ID.fullmatch(self.id):
            raise InvalidArgument("a KEK id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        if not isinstance(self.secret, bytes) or len(self.secret) != KEK_BYTES:
            raise InvalidArgument(f"a KEK secret must be exactly {KEK_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Kek(id={self.id!r})"

    __str__ = __repr__

    @classmethod
    def from_secret(cls, secret: bytes) -> Kek:
        """A KEK whose id is derived from the secret, so operators can tell KEKs apart safely."""
        if not isinstance(secret, bytes) or len(secret) != KEK_BYTES:
            raise InvalidArgument(f"a KEK secret must be exactly {KEK_BYTES} bytes")
        digest = hashlib.sha256(_KEK_ID_LABEL + secret).digest()
        return cls(id=base64.urlsafe_b64encode(digest).decode("ascii")[:16], secret=secret)


@dataclass(frozen=True, slots=True)
class _Parsed:
    kek_id: str
    header: bytes
    kek_nonce: bytes
    wrapped_dek: bytes
    dek_nonce: bytes
    ciphertext: bytes


def _header(kek_id: str) -> bytes:
    raw_id = kek_id.encode("ascii")
    return MAGIC + bytes([VERSION_1, len(raw_id)]) + raw_id


def _parse(blob: bytes) -> _Parsed:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise EnvelopeError("envelope must be bytes")
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise EnvelopeError("not a key envelope (bad magic)")
    if len(blob) < len(MAGIC) + 2:
        raise EnvelopeError("key envelope is truncated")
    version = blob[len(MAGIC)]
    if version != VERSION_1:
        raise EnvelopeError(f"unsupported key envelope version {version}")
    id_len = blob[len(MAGIC) + 1]
    pos = len(MAGIC) + 2
    minimum = pos + id_len + NONCE_BYTES + WRAPPED_DEK_BYTES + NONCE_BYTES + TAG_BYTES
    if len(blob) < minimum:
        raise EnvelopeError("key envelope is truncated")
    try:
        kek_id = blob[pos : pos + id_len].decode("ascii")
    except UnicodeDecodeError:
        raise EnvelopeError("key envelope has a malformed KEK id") from None
    if not _KEK_ID.fullmatch(kek_id):
        raise EnvelopeError("key envelope has a malformed KEK id")
    header = blob[: pos + id_len]
    pos += id_len
    kek_nonce = blob[pos : pos + NONCE_BYTES]
    pos += NONCE_BYTES
    wrapped_dek = blob[pos : pos + WRAPPED_DEK_BYTES]
    pos += WRAPPED_DEK_BYTES
    dek_nonce = blob[pos : pos + NONCE_BYTES]
    pos += NONCE_BYTES
    return _Parsed(kek_id, header, kek_nonce, wrapped_dek, dek_nonce, blob[pos:])


def envelope_kek_id(blob: bytes) -> str:
    """The id of the KEK that sealed ``blob`` (to find blobs a KEK rotation must re-wrap)."""
    return _parse(blob).kek_id


class KekRing:
    """The current KEK, which seals, plus older KEKs still accepted for opening."""

    def __init__(self, current: Kek, previous: Iterable[Kek] = ()) -> None:
        keks: dict[str, Kek] = {current.id: current}
        for kek in previous:
            known = keks.get(kek.id)
            if known is not None and known.secret != kek.secret:
                raise InvalidArgument(f"two different KEKs share the id {kek.id!r}")
            keks.setdefault(kek.id, kek)
        self._current = current
        self._keks = keks

    def __repr__(self) -> str:
        return f"KekRing(current={self._current.id!r}, ids={list(self._keks)!r})"

    @property
    def current_id(self) -> str:
        """The id of the KEK new blobs are sealed with (store it next to each blob)."""
        return self._current.id

    @property
    def ids(self) -> tuple[str, ...]:
        """Every KEK id this ring can open, current first."""
        return tuple(self._keks)

    def wrap(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Seal ``plaintext`` under a fresh DEK sealed by the current KEK; ``aad`` is bound."""
        header = _header(self._current.id)
        dek = AESGCM.generate_key(bit_length=DEK_BYTES * 8)
        kek_nonce = os.urandom(NONCE_BYTES)
        dek_nonce = os.urandom(NONCE_BYTES)
        wrapped_dek = AESGCM(self._current.secret).encrypt(
            kek_nonce, dek, _DEK_LABEL + header + aad
        )
        ciphertext = AESGCM(dek).encrypt(dek_nonce, plaintext, _DATA_LABEL + header + aad)
        return header + kek_nonce + wrapped_dek + dek_nonce + ciphertext

    def unwrap(self, blob: bytes, *, aad: bytes) -> bytes:
        """Open a blob sealed by any KEK of the ring; EnvelopeError if it cannot be trusted."""
        parsed = _parse(blob)
        kek = self._keks.get(parsed.kek_id)
        if kek is None:
            raise EnvelopeError(
                f"key envelope was sealed with unknown KEK id {parsed.kek_id!r}; "
                f"this ring holds {list(self._keks)!r} (configure the previous KEK to open it)"
            )
        try:
            dek = AESGCM(kek.secret).decrypt(
                parsed.kek_nonce, parsed.wrapped_dek, _DEK_LABEL + parsed.header + aad
            )
            return AESGCM(dek).decrypt(
                parsed.dek_nonce, parsed.ciphertext, _DATA_LABEL + parsed.header + aad
            )
        except InvalidTag:
            raise EnvelopeError(
                f"key envelope under KEK {kek.id!r} failed authentication: "
                "it was tampered with or truncated, or the aad does not match"
            ) from None

    def rewrap(self, blob: bytes, *, aad: bytes) -> bytes:
        """Open with any KEK and seal again under the current one (KEK rotation)."""
        return self.wrap(self.unwrap(blob, aad=aad), aad=aad)
