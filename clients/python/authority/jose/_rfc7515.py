"""Compact JWS (RFC 7515 section 7.1) verification in two steps around the key lookup.

``parse_compact`` parses the token exactly once and checks everything that needs no key:
size, three segments, a canonical base64url JSON header, ``alg`` in the allow-list,
``typ`` at+jwt, no ``crit``, a string ``kid``. The caller then finds the key by ``kid``
in its own key set (the header never chooses it), and ``verify_signature`` requires the
header's ``alg`` to be that key's, a canonical (and, for ES256, low-S) signature, the
signature itself, and well-formed claims. The order, reasons and details are the
authority's ``Verify``: the server and local verifiers run this same code.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from authority.jose._rfc4648 import b64url_decode
from authority.jose._rfc7518 import ALGORITHMS, is_low_s
from authority.jose._rfc9068 import (
    ACCESS_TOKEN_TYPE,
    Claims,
    ClaimsError,
    Verification,
    VerifyReason,
    parse_claims,
)

UNPUBLISHED_KEY = Verification(VerifyReason.UNKNOWN_KEY, "the token's key id is not published")


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A token that passed every check before the key lookup."""

    token: str
    kid: str
    algorithm: str
    signing_input_length: int
    payload_segment: str
    signature_segment: str


def parse_compact(
    token: str, *, max_bytes: int, algorithms: Container[str] = ALGORITHMS
) -> CompactJws | Verification:
    """The checks before the key lookup; a failure is a ``Verification`` (never raises)."""
    if len(token) > max_bytes:
        return Verification(VerifyReason.TOO_LARGE, f"the token is larger than {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        return Verification(VerifyReason.MALFORMED, "not a compact JWS (three dot-separated parts)")
    header_segment, payload_segment, signature_segment = parts
    try:
        header: Any = json.loads(b64url_decode(header_segment))
    except (ValueError, RecursionError):
        return Verification(VerifyReason.MALFORMED, "the header is not base64url-encoded JSON")
    if not isinstance(header, dict):
        return Verification(VerifyReason.MALFORMED, "the header is not a JSON object")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms or algorithm not in ALGORITHMS:
        return Verification(
            VerifyReason.DISALLOWED_ALGORITHM, f"algorithm {algorithm!r} is not allowed"
        )
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        return Verification(
            VerifyReason.WRONG_TYPE, "the token is not an access token (typ at+jwt)"
        )
    if "crit" in header:
        return Verification(VerifyReason.MALFORMED, "critical header extensions are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        return UNPUBLISHED_KEY
    return CompactJws(
        token,
        kid,
        algorithm,
        len(header_segment) + 1 + len(payload_segment),
        payload_segment,
        signature_segment,
    )


def verify_signature(jws: CompactJws, algorithm: str, public_key: Any) -> Claims | Verification:
    """Check ``jws`` with the key its ``kid`` named (published for ``algorithm``); return the
    typed claims or a failure. Time, issuer and audience are ``check_claims``'s job."""
    if algorithm != jws.algorithm:
        return Verification(
            VerifyReason.DISALLOWED_ALGORITHM, "the token's algorithm does not match its key"
        )
    try:
        signature = b64url_decode(jws.signature_segment)
    except ValueError:
        return Verification(VerifyReason.MALFORMED, "the signature is not canonical base64url")
    if jws.algorithm == "ES256" and not is_low_s(signature):
        return Verification(VerifyReason.BAD_SIGNATURE, "the signature is not low-S")
    try:
        signing_input = jws.token[: jws.signing_input_length].encode("ascii")
    except UnicodeEncodeError:
        return Verification(VerifyReason.MALFORMED, "the claims are not base64url-encoded JSON")
    if not ALGORITHMS[jws.algorithm].verify(signing_input, public_key, signature):
        return Verification(VerifyReason.BAD_SIGNATURE, "the signature does not match")
    try:
        return parse_claims(json.loads(b64url_decode(jws.payload_segment)), jws.kid)
    except ClaimsError as exc:
        return Verification(VerifyReason.MALFORMED, f"malformed claims: {exc}")
    except (ValueError, RecursionError):
        return Verification(VerifyReason.MALFORMED, "the claims are not base64url-encoded JSON")
