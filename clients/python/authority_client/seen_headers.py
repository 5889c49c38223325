"""The cache-miss fast path: a never-seen token whose header is one already proven good.

The authority signs every token of one key under the same header, so after the first
token the JOSE core's header work (base64url, JSON, ``alg``/``typ``/``crit``/``kid``) only
repeats a verdict already known. This remembers, per exact header string, the key that
header resolved to, and then runs the core's remaining checks in the core's order with
the core's functions: canonical signature, low-S for ES256, an ASCII signing input, the
signature, then the claims (I-JSON as the core checks it, typed by ``fast_claims`` when
they have the plain shape).

It never decides a verdict the core would not: a header is remembered only after a token
under it passed ``parse_compact`` and ``verify_signature``; its key must still be the very
object published under its ``kid``; and at any step the core would reject, this returns
``None`` so the caller runs the core itself, which gives the reason and its detail. The
one verdict given here is a bad signature, after every earlier check passed exactly as
the core's (so a forged token costs one signature check, not two).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authority.jose.cache import BoundedCache
from authority.jose.claims import Claims, Verification, VerifyReason, parse_claims
from authority.jose.jwk import PublicJwk
from authority.jose.jws import (
    ALGORITHMS,
    b64url_decode,
    is_low_s,
    lone_surrogate_in_text,
    verify_ed25519,
)
from authority_client.fast_claims import typed_claims

__all__ = ["BAD_SIGNATURE", "SeenHeaders", "signature_check"]

BAD_SIGNATURE = Verification(VerifyReason.BAD_SIGNATURE, "the signature does not match")
# Headers per verifier: one per published key (and header spelling) in practice; the bound
# only matters if something odd is signed, since nothing unsigned is ever remembered.
MAX_HEADERS = 64
# json.loads(bytes) guesses UTF-8/16/32 first; a payload opening with '{"' is UTF-8 to
# that guess, and has no leading whitespace, so decoding it ourselves and running the
# default decoder's scanner from 0 to the very end is json.loads exactly (the scanner is
# what JSONDecoder.decode runs, between two whitespace regexes).
_JSON_OBJECT = b'{"'
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

SignatureCheck = Callable[[bytes, bytes], bool]


def signature_check(key: PublicJwk) -> SignatureCheck:
    """``(signing_input, signature) -> bool`` for ``key``: PyJWT's algorithm object (what
    the core calls), except Ed25519, the core's libsodium check with the key's raw bytes
    taken once here rather than per token."""
    public_key: Any = key.key
    if key.algorithm == "EdDSA" and isinstance(public_key, Ed25519PublicKey):
        public = public_key.public_bytes_raw()

        def check_ed25519(signing_input: bytes, signature: bytes) -> bool:
            return verify_ed25519(public, signing_input, signature)

        return check_ed25519
    algorithm = ALGORITHMS[key.algorithm]

    def check(signing_input: bytes, signature: bytes) -> bool:
        return algorithm.verify(signing_input, public_key, signature)

    return check


class _Seen:
    """A proven header: the key it resolved to and that key's signature check."""

    __slots__ = ("check", "key")

    def __init__(self, key: PublicJwk) -> None:
        self.key = key
        self.check = signature_check(key)


class SeenHeaders:
    """Header strings proven good, per verifier (the allow-list and size bound are its)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._seen: BoundedCache[str, _Seen] = BoundedCache(MAX_HEADERS)

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, token: str, key: PublicJwk) -> None:
        """Record ``token``'s header: call only once the core accepted its signature."""
        header = token[: token.index(".")]
        seen = self._seen.get(header)
        if seen is None or seen.key is not key:
            self._seen[header] = _Seen(key)

    def verify(
        self, token: str, keys: Mapping[str, PublicJwk]
    ) -> tuple[Claims, str] | Verification | None:
        """Claims and their key's algorithm, a bad signature, or ``None``: run the core."""
        if len(token) > self.max_bytes:
            return None
        first = token.find(".")
        seen = self._seen.get(token[:first]) if first >= 0 else None
        if seen is None:
            return None
        key = seen.key
        if keys.get(key.kid) is not key:  # removed, or republished: the core decides
            return None
        second = token.find(".", first + 1)
        if second < 0 or token.find(".", second + 1) >= 0:  # not three segments
            return None
        try:
            signature = b64url_decode(token[second + 1 :])
            signing_input = token[:second].encode("ascii")
        except ValueError:  # non-canonical base64url, or a non-ASCII signing input
            return None
        if key.algorithm == "ES256" and not is_low_s(signature):
            return None
        if not seen.check(signing_input, signature):
            return BAD_SIGNATURE
        try:
            raw = b64url_decode(token[first + 1 : second])
            if not raw.startswith(_JSON_OBJECT):
                return None
            text = raw.decode("utf-8", "surrogatepass")
            value, end = _scan(text, 0)
            if end != len(text) or lone_surrogate_in_text(text, value):  # the core's call
                return None
            claims = typed_claims(value, key.kid)
            if claims is None:
                claims = parse_claims(value, key.kid)
            return claims, key.algorithm
        except (ValueError, RecursionError, StopIteration):  # ClaimsError too: the core words it
            return None
