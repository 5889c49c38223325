"""Unpadded base64url (RFC 4648 section 5, as RFC 7515 section 2 uses it), strict and
canonical: exactly one string decodes to given bytes, so anything keyed on a token or a
JWK member string never sees one value under two spellings."""

from __future__ import annotations

import base64
import binascii

# base64url -> standard alphabet; characters foreign to base64url become '!', which strict
# mode rejects (in C, rather than checking character by character in Python).
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# The last character of a canonical encoding, by length modulo 4: with 2 (3) characters in
# the last group, its low 4 (2) bits are unused and must be zero (RFC 4648 section 3.5).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


class NonCanonicalError(ValueError):
    """Valid base64url whose unused trailing bits are set: a second spelling of the bytes."""


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Strict, canonical base64url: no padding, no foreign characters, no set bits in the
    unused tail. Raises ValueError (NonCanonicalError for the last)."""
    data = segment.encode("ascii")  # UnicodeEncodeError is a ValueError
    tail = _CANONICAL_LAST.get(len(data) % 4)
    if tail is not None and segment[-1] not in tail:
        raise NonCanonicalError("non-canonical base64url (unused trailing bits set)")
    padded = data.translate(_TO_STANDARD) + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64url") from exc
