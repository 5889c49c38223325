"""Compact JWS (RFC 7515 section 7.1) verification in two steps around the key lookup.

``parse_compact`` parses the token exactly once and checks everything that needs no key:
size, three segments, a canonical base64url JSON header, ``alg`` in the allow-list,
``typ`` at+jwt, no ``crit``, a string ``kid``. The caller then finds the key by ``kid``
in its own key set (the header never chooses it), and ``verify_signature`` requires the
header's ``alg`` to be that key's, a canonical (and, for ES256, low-S) signature, the
signature itself, and well-formed claims. Header and claims must be I-JSON as far as
RFC 7493 forbids lone surrogates (``_rfc7493``). The order, reasons and details are the
authority's ``Verify``: the server and local verifiers run this same code.

Every token one key signs carries the same header segment, so the facts read from a header
that passed (its ``kid`` and ``alg``) are remembered in a small bounded memo: a cache miss
then decodes only the payload. The memo holds only what the header alone decides, and the
caller's allow-list is applied on every call, so no verdict depends on it.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, cast

from authority.jose._rfc4648 import b64url_decode
from authority.jose._rfc7493 import LoneSurrogateError, lone_surrogate_in, lone_surrogate_in_text
from authority.jose._rfc7518 import ALGORITHMS, is_low_s
from authority.jose._rfc7518 import verify as _verify
from authority.jose._rfc9068 import (
    ACCESS_TOKEN_TYPE,
    Claims,
    ClaimsError,
    Verification,
    VerifyReason,
    parse_claims,
)

UNPUBLISHED_KEY = Verification(VerifyReason.UNKNOWN_KEY, "the token's key id is not published")
# json.loads(str) with no options is this decoder's decode, which is this scanner (C) from
# index 0 when the text opens with no whitespace, plus a check that nothing follows.
_json_decode = json.JSONDecoder().decode
_json_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    cast(Any, json.JSONDecoder())  # typeshed names the class itself as the argument
)
_NOT_JSON = Verification(VerifyReason.MALFORMED, "the claims are not base64url-encoded JSON")
_NOT_I_JSON = Verification(
    VerifyReason.MALFORMED, "malformed claims: a string holds a lone UTF-16 surrogate (not I-JSON)"
)

# Header segment -> (alg, kid) of a header that passed every check. A handful of keys sign
# at once; the bound stops a stream of forged headers from growing it (or keeping ours out).
HEADER_MEMO_SIZE = 64
_headers: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A token that passed every check before the key lookup."""

    token: str
    kid: str
    algorithm: str
    signing_input_length: int
    payload_segment: str
    signature_segment: str


class _CompactJwsSlots:
    """``CompactJws``'s layout: filled by slot stores, then made one (``_rfc9068``'s
    ``_ClaimsSlots`` says why)."""

    __slots__ = CompactJws.__slots__  # dataclass(slots=True) made these


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
    known = _headers.get(header_segment)
    if known is None:
        checked = _parse_header(header_segment, algorithms)
        if isinstance(checked, Verification):
            return checked
        if len(_headers) >= HEADER_MEMO_SIZE:  # forged headers churn it; ours come back
            _headers.clear()
        _headers[header_segment] = checked
        known = checked
    elif known[0] not in algorithms:  # the check _parse_header makes first, for this caller
        return _disallowed(known[0])
    jws: Any = _CompactJwsSlots()  # CompactJws(...) without its frozen __init__
    jws.algorithm, jws.kid = known
    jws.token = token
    jws.signing_input_length = len(header_segment) + 1 + len(payload_segment)
    jws.payload_segment = payload_segment
    jws.signature_segment = signature_segment
    jws.__class__ = CompactJws
    return cast(CompactJws, jws)


def _disallowed(algorithm: object) -> Verification:
    return Verification(
        VerifyReason.DISALLOWED_ALGORITHM, f"algorithm {algorithm!r} is not allowed"
    )


def _parse_header(segment: str, algorithms: Container[str]) -> tuple[str, str] | Verification:
    """(alg, kid) of a header segment, or why it fails. What is remembered of a header that
    passed does not depend on ``algorithms`` (a subset of ``ALGORITHMS``, checked again on
    every call), so callers with different allow-lists may share the memo."""
    try:
        header: Any = json.loads(b64url_decode(segment))
    except (ValueError, RecursionError):
        return Verification(VerifyReason.MALFORMED, "the header is not base64url-encoded JSON")
    if lone_surrogate_in(header):  # once per header string: the memo remembers the rest
        return Verification(
            VerifyReason.MALFORMED, "the header holds a lone UTF-16 surrogate (not I-JSON)"
        )
    if not isinstance(header, dict):
        return Verification(VerifyReason.MALFORMED, "the header is not a JSON object")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms or algorithm not in ALGORITHMS:
        return _disallowed(algorithm)
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        return Verification(
            VerifyReason.WRONG_TYPE, "the token is not an access token (typ at+jwt)"
        )
    if "crit" in header:
        return Verification(VerifyReason.MALFORMED, "critical header extensions are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        return UNPUBLISHED_KEY
    return algorithm, kid


def _json_document(data: bytes) -> Any:
    """``json.loads(data)``, refusing a lone surrogate (``LoneSurrogateError``: I-JSON).

    On bytes, json first guesses the encoding (UTF-16 and -32 included) in Python; a
    document that opens with '{"' can only be UTF-8, as it would find, so ours skip the
    guess, and json's Python wrapper when the object ends the text (anything else after
    it, whitespace included, goes to json for its own verdict)."""
    if data[:2] == b'{"':
        text = data.decode("utf-8", "surrogatepass")
        try:
            document, end = _json_scan(text, 0)
            if end != len(text):
                document = _json_decode(text)
        except StopIteration:
            document = _json_decode(text)
        if lone_surrogate_in_text(text, document):
            raise LoneSurrogateError("a string holds a lone surrogate")
        return document
    document = json.loads(data)
    if lone_surrogate_in(document):
        raise LoneSurrogateError("a string holds a lone surrogate")
    return document


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
    if not _verify(jws.algorithm, signing_input, public_key, signature):
        return Verification(VerifyReason.BAD_SIGNATURE, "the signature does not match")
    try:
        return parse_claims(_json_document(b64url_decode(jws.payload_segment)), jws.kid)
    except ClaimsError as exc:
        return Verification(VerifyReason.MALFORMED, f"malformed claims: {exc}")
    except LoneSurrogateError:  # json takes one; no UTF-8 system (protobuf...) can
        return _NOT_I_JSON
    except (ValueError, RecursionError):
        return _NOT_JSON
