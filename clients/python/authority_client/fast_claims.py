"""The claims of a signature-checked token, typed in one pass for the shape the authority
mints; any other shape is left to the JOSE core's ``parse_claims``.

``parse_claims`` validates each member through a helper and builds ``Claims`` by keyword:
about a third of a cache miss's Python time. This accepts only members whose JSON types
are the plain ones the authority writes (``type(x) is str``, ``int``, ``float``, a list of
strings for ``aud``), and returns exactly the ``Claims`` the core would; for anything else,
including every payload the core rejects, it returns ``None`` and the caller asks the core
(which then gives the reason and its detail). ``tests/client/test_fast_path.py`` checks,
by property, that it never returns a value the core would not.
"""

from __future__ import annotations

from dataclasses import fields
from types import MappingProxyType
from typing import Any

from authority.jose.claims import REGISTERED_CLAIMS, Claims

__all__ = ["typed_claims"]

# RFC 7519 NumericDate bounds as the core enforces them: -(2**53) < value < 2**53.
_LIMIT = 2**53
# The core's shared empty mapping for "no extra claims" (what its default produces).
_NO_EXTRA = Claims("", "", (), 0, 0.0, 0, "", "", "", (), "").extra
# Claims is built field by field below: fail at import, not silently, if its fields change.
_FIELDS = (
    "issuer",
    "subject",
    "audience",
    "expires_at",
    "issued_at",
    "not_before",
    "token_id",
    "session_id",
    "client_id",
    "scope",
    "key_id",
    "extra",
)
if tuple(f.name for f in fields(Claims)) != _FIELDS:  # pragma: no cover - a core change
    raise ImportError("authority.jose.claims.Claims changed: update authority_client.fast_claims")
# A frozen dataclass's __init__ sets each field through object.__setattr__ (2 us for these
# twelve); the slots' own descriptors set the same values in half the time. The values
# are the ones __init__ would get; Claims has no __post_init__.
_new = object.__new__
(
    _issuer,
    _subject,
    _audience,
    _expires_at,
    _issued_at,
    _not_before,
    _token_id,
    _session_id,
    _client_id,
    _scope,
    _key_id,
    _extra,
) = (getattr(Claims, name).__set__ for name in _FIELDS)


def typed_claims(payload: Any, key_id: str) -> Claims | None:
    """``parse_claims(payload, key_id)`` for the plain shape, else ``None`` (ask the core)."""
    if type(payload) is not dict:
        return None
    get = payload.get
    issuer, subject, token_id = get("iss"), get("sub"), get("jti")
    if not (
        type(issuer) is str
        and issuer
        and type(subject) is str
        and subject
        and type(token_id) is str
        and token_id
    ):
        return None
    audience_value = get("aud")
    if type(audience_value) is str:
        audience: tuple[str, ...] = (audience_value,)
    elif type(audience_value) is list and audience_value:
        audience = tuple(audience_value)
        for member in audience:
            if type(member) is not str:
                return None
    else:
        return None
    expires_at, issued_at, not_before = get("exp"), get("iat"), get("nbf", 0)
    if not (
        type(expires_at) is int
        and -_LIMIT < expires_at < _LIMIT
        and type(not_before) is int
        and -_LIMIT < not_before < _LIMIT
        and (type(issued_at) is float or type(issued_at) is int)
        and -_LIMIT < issued_at < _LIMIT
    ):
        return None
    session_id, client_id, scope = get("sid"), get("client_id"), get("scope", "")
    if session_id is None:
        session_id = ""
    if client_id is None:
        client_id = ""
    if type(session_id) is not str or type(client_id) is not str or type(scope) is not str:
        return None
    extra = (
        _NO_EXTRA
        if payload.keys() <= REGISTERED_CLAIMS
        else MappingProxyType({k: v for k, v in payload.items() if k not in REGISTERED_CLAIMS})
    )
    claims = _new(Claims)
    _issuer(claims, issuer)
    _subject(claims, subject)
    _audience(claims, audience)
    _expires_at(claims, expires_at)
    _issued_at(claims, float(issued_at))
    _not_before(claims, not_before)
    _token_id(claims, token_id)
    _session_id(claims, session_id)
    _client_id(claims, client_id)
    _scope(claims, tuple(scope.split()))
    _key_id(claims, key_id)
    _extra(claims, extra)
    return claims
