"""Access-token claims (RFC 9068 over RFC 7519): typed parsing, then the checks that
depend on time and policy, as pure functions of the claims, ``now`` and ``leeway``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from sys import intern
from types import MappingProxyType
from typing import Any, cast

ACCESS_TOKEN_TYPE = "at+jwt"
REGISTERED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "client_id", "scope"}
)
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
# NumericDates must be exact in a double (and finite): |date| < 2**53.
_DATE_BOUND = 2**53
# One audience tuple per audience string: nearly every token carries one of a few.
_AUDIENCE_MEMO_SIZE = 64
_audiences: dict[str, tuple[str, ...]] = {}


class VerifyReason(StrEnum):
    """Why a token was accepted or rejected (mirrors authority.v1.VerifyResult)."""

    VALID = "valid"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    DISALLOWED_ALGORITHM = "disallowed_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    REVOKED = "revoked"
    WRONG_TYPE = "wrong_type"


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a signature-checked access token, typed."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    expires_at: int
    issued_at: float  # RFC 7519 allows fractions; the authority's carry microseconds
    not_before: int
    token_id: str
    session_id: str
    client_id: str
    scope: tuple[str, ...]
    key_id: str
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        """True when every one of ``scopes`` was granted."""
        return set(scopes).issubset(self.scope)


@dataclass(frozen=True, slots=True)
class Verification:
    """A verdict: valid with claims, or a reason and a detail safe to show the holder."""

    reason: VerifyReason
    detail: str = ""
    claims: Claims | None = None

    @property
    def valid(self) -> bool:
        return self.reason is VerifyReason.VALID


# A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, a call
# of its own (about 0.15 us each, 12 for ``Claims``): the constructors were about a tenth
# of a cache miss's Python time. A class with the same ``__slots__`` (and base) is filled
# with plain slot stores, then becomes the frozen class by ``__class__`` assignment, which
# CPython allows between classes of identical layout; the result is an ordinary instance,
# frozen from then on. Only code that sets every field (``parse_claims``'s one pass,
# ``valid_verdict``) does this; tests/unit/test_verify_fast_path.py holds both to the
# dataclass constructors.
class _ClaimsSlots:
    __slots__ = Claims.__slots__  # dataclass(slots=True) made these


class _VerificationSlots:
    __slots__ = Verification.__slots__


def valid_verdict(claims: Claims) -> Verification:
    """``Verification(VerifyReason.VALID, claims=claims)``, without the frozen ``__init__``."""
    new: Any = _VerificationSlots()
    new.reason = VerifyReason.VALID
    new.detail = ""
    new.claims = claims
    new.__class__ = Verification
    return cast(Verification, new)


class ClaimsError(ValueError):
    """The payload is not a well-formed access-token claim set."""


def _string(payload: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ClaimsError(f"claim {name!r} must be a non-empty string")
    return value


def _numeric_date(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    # bool is an int subclass; a date of `true` is malformed, not 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimsError(f"claim {name!r} must be a NumericDate")
    if not -_DATE_BOUND < value < _DATE_BOUND:  # also false for NaN
        raise ClaimsError(f"claim {name!r} is out of range")
    return int(value)


def _fractional_date(payload: Mapping[str, Any], name: str) -> float:
    """A NumericDate kept with its fraction (RFC 7519 allows one): ``iat`` orders tokens
    against revocations to the microsecond."""
    _numeric_date(payload, name)
    return float(payload[name])


def _extra_claims(payload: dict[str, Any]) -> Mapping[str, Any]:
    """Caller claims, sharing one empty mapping in the common case (cached claims stay small)."""
    if payload.keys() <= REGISTERED_CLAIMS:
        return _NO_EXTRA
    return MappingProxyType({k: v for k, v in payload.items() if k not in REGISTERED_CLAIMS})


def _shared(value: str) -> str:
    """One copy of a value many tokens carry (``intern`` takes exact strs only)."""
    return intern(value) if type(value) is str else value


def parse_claims(payload: Any, key_id: str) -> Claims:
    """Type the JSON claims of an access token; raise ClaimsError on any shape error.

    A cache miss parses every token once, so the common shape (string claims, integer
    dates, one audience) is recognised in one pass; anything else, valid or not, takes
    the claim-by-claim path, which gives the same claims or the precise error."""
    if type(payload) is dict:
        get = payload.get
        issuer, subject, token_id = get("iss"), get("sub"), get("jti")
        expires_at, issued_at, not_before = get("exp"), get("iat"), get("nbf", 0)
        session_id, client_id = get("sid"), get("client_id")
        audience, scope = get("aud"), get("scope", "")
        if (
            type(issuer) is str
            and issuer
            and type(subject) is str
            and subject
            and type(token_id) is str
            and token_id
            and type(audience) is str
            and type(scope) is str
            and (session_id is None or type(session_id) is str)
            and (client_id is None or type(client_id) is str)
            and type(expires_at) is int
            and -_DATE_BOUND < expires_at < _DATE_BOUND
            and type(not_before) is int
            and -_DATE_BOUND < not_before < _DATE_BOUND
            and (type(issued_at) is int or type(issued_at) is float)
            and -_DATE_BOUND < issued_at < _DATE_BOUND
        ):
            audiences = _audiences.get(audience)
            if audiences is None:
                if len(_audiences) >= _AUDIENCE_MEMO_SIZE:
                    _audiences.clear()
                audiences = _audiences[audience] = (_shared(audience),)
            new: Any = _ClaimsSlots()  # Claims(...) without its frozen __init__
            new.issuer = _shared(issuer)
            new.subject = subject
            new.audience = audiences
            new.expires_at = expires_at
            new.issued_at = float(issued_at)
            new.not_before = not_before
            new.token_id = token_id
            new.session_id = "" if session_id is None else session_id
            new.client_id = "" if client_id is None else _shared(client_id)
            new.scope = tuple(scope.split())
            new.key_id = key_id
            new.extra = _extra_claims(payload)
            new.__class__ = Claims
            return cast(Claims, new)
    return _parse_claims_checked(payload, key_id)


def _parse_claims_checked(payload: Any, key_id: str) -> Claims:
    """``parse_claims`` claim by claim, with the error for the first one that fails."""
    if not isinstance(payload, dict):
        raise ClaimsError("the claims are not a JSON object")
    audience_value = payload.get("aud")
    if isinstance(audience_value, str):
        audience: tuple[str, ...] | None = _audiences.get(audience_value)
        if audience is None:
            if len(_audiences) >= _AUDIENCE_MEMO_SIZE:
                _audiences.clear()
            audience = _audiences[audience_value] = (_shared(audience_value),)
    elif isinstance(audience_value, list) and all(isinstance(a, str) for a in audience_value):
        audience = tuple(audience_value)
    else:
        raise ClaimsError("claim 'aud' must be a string or a list of strings")
    if not audience:
        raise ClaimsError("claim 'aud' is empty")
    scope_value = payload.get("scope", "")
    if not isinstance(scope_value, str):
        raise ClaimsError("claim 'scope' must be a space-separated string")
    # Values most tokens share (issuer, client) are interned: a verification cache then
    # holds one copy of each rather than one per token.
    return Claims(
        issuer=_shared(_string(payload, "iss")),
        subject=_string(payload, "sub"),
        audience=audience,
        expires_at=_numeric_date(payload, "exp"),
        issued_at=_fractional_date(payload, "iat"),
        not_before=_numeric_date(payload, "nbf") if "nbf" in payload else 0,
        token_id=_string(payload, "jti"),
        session_id=_string(payload, "sid", required=False),
        client_id=_shared(_string(payload, "client_id", required=False)),
        scope=tuple(scope_value.split()),
        key_id=key_id,
        extra=_extra_claims(payload),
    )


def check_claims(
    claims: Claims,
    *,
    issuer: str,
    audiences: frozenset[str],
    now: float,
    leeway: float,
) -> Verification:
    """Time, issuer and audience checks. Cheap: run on every verification, cached or not."""
    if now >= claims.expires_at + leeway:
        return Verification(VerifyReason.EXPIRED, "the token has expired")
    if now + leeway < claims.not_before or now + leeway < claims.issued_at:
        return Verification(VerifyReason.NOT_YET_VALID, "the token is not valid yet")
    if claims.issuer != issuer:
        return Verification(VerifyReason.WRONG_ISSUER, "the token was not issued by this authority")
    if audiences.isdisjoint(claims.audience):
        return Verification(VerifyReason.WRONG_AUDIENCE, "the token is not for this audience")
    return valid_verdict(claims)
