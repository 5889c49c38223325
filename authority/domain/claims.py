"""Which extra claims a client may put in a token-exchange token: an allow-list per client.

A deny-list of dangerous names cannot be complete (the IANA registry grows, and relying
parties read claims we never heard of), so nothing is allowed unless the client was
registered with it. Registered JWT claims are ours alone and can never be registered.
Claims that relying parties use for authorization or identity binding (``cnf``, ``act``,
``roles``, ``email_verified``...) are refused in the ordinary list and accepted only in a
separate, explicit one, so nobody grants them by accident.

Names are compared after NFKC_Casefold for these two checks, so ``ROLES`` or ``ｒｏｌｅｓ``
is as sensitive as ``roles`` (a relying party may fold case); the allow-list itself
matches names exactly, as JWT does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from authority.domain.bounds import check_unicode
from authority.domain.errors import InvalidArgument, PermissionDenied
from authority.domain.principals import canonical_name
from authority.domain.tokens import REGISTERED_CLAIMS

MAX_CLAIM_NAMES = 64
MAX_CLAIM_NAME_LENGTH = 128
MAX_EXTRA_CLAIMS_BYTES = 4096

# Claims a relying party may trust for authorization, authentication context, key
# binding, delegation or identity: from the IANA "JSON Web Token Claims" registry
# (RFC 7800 cnf, RFC 8693 act/may_act, OIDC Core azp/acr/amr/auth_time/nonce/at_hash/
# c_hash/sub_jwk and the verified identity claims, RFC 9068/SCIM roles/groups/
# entitlements, RFC 8417 events/toe/txn, RFC 9449 DPoP proof claims), the JOSE header
# names that some libraries merge into claims (typ, cty, kid, alg, jku, jwk, x5u, x5c),
# and the common vendor spellings of scopes, permissions and tenants.
SENSITIVE_CLAIMS = frozenset(
    {
        "cnf", "act", "may_act", "azp", "acr", "amr", "auth_time", "nonce",
        "at_hash", "c_hash", "s_hash", "sub_jwk", "roles", "role", "groups",
        "entitlements", "permissions", "scp", "scopes", "typ", "cty", "kid", "alg",
        "jku", "jwk", "x5u", "x5c", "x5t", "x5t#s256", "crit", "events", "toe", "txn",
        "htm", "htu", "ath", "jkt", "email", "email_verified", "phone_number",
        "phone_number_verified", "preferred_username", "upn", "tid", "tenant",
        "tenant_id", "oid", "admin", "is_admin", "client_secret", "token_type",
        "token_use", "authorization_details", "attest", "iss_var", "rcx",
    }
)  # fmt: skip
_REGISTERED_FOLDED = frozenset(canonical_name(n) for n in REGISTERED_CLAIMS)


def is_registered(name: str) -> bool:
    return canonical_name(name) in _REGISTERED_FOLDED


def is_sensitive(name: str) -> bool:
    return canonical_name(name) in SENSITIVE_CLAIMS


def _check_names(names: Iterable[str]) -> frozenset[str]:
    names = list(names)
    if len(names) > MAX_CLAIM_NAMES:
        raise InvalidArgument(f"at most {MAX_CLAIM_NAMES} claim names may be registered")
    for name in names:
        if (
            not name
            or len(name) > MAX_CLAIM_NAME_LENGTH
            or any(c.isspace() or not c.isprintable() for c in name)
        ):
            raise InvalidArgument(
                f"claim names are 1-{MAX_CLAIM_NAME_LENGTH} printable characters without spaces"
            )
        if is_registered(name):
            raise InvalidArgument(
                f"claim {name!r} is a registered JWT claim set by the authority; "
                "it can never be registered for a client"
            )
    return frozenset(names)


def validate_allowed_claims(
    allowed: Iterable[str], sensitive: Iterable[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """The two lists of a client, checked: no registered claim anywhere, no sensitive
    claim in the ordinary list, and only sensitive claims in the sensitive list."""
    ordinary, chosen = _check_names(allowed), _check_names(sensitive)
    if len(ordinary | chosen) > MAX_CLAIM_NAMES:
        raise InvalidArgument(f"at most {MAX_CLAIM_NAMES} claim names may be registered")
    for name in sorted(ordinary):
        if is_sensitive(name):
            raise InvalidArgument(
                f"claim {name!r} is security-sensitive (relying parties may trust it for "
                "authorization or identity); register it as a sensitive claim "
                "(--allow-sensitive-claim) only if this client is trusted to assert it"
            )
    for name in sorted(chosen):
        if not is_sensitive(name):
            raise InvalidArgument(
                f"claim {name!r} is not security-sensitive; register it as an ordinary claim"
            )
    return ordinary, chosen


def check_exchange_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """What can be judged before the client is known: Unicode text only (a lone surrogate
    would be signed, then fail every answer that carries it), no registered claim,
    bounded size."""
    check_unicode(dict(claims), "claims")
    reserved = sorted(name for name in claims if is_registered(name))
    if reserved:
        raise InvalidArgument(f"claims may not set registered claims: {', '.join(reserved)}")
    if len(json.dumps(claims)) > MAX_EXTRA_CLAIMS_BYTES:
        raise InvalidArgument(f"claims are larger than {MAX_EXTRA_CLAIMS_BYTES} bytes of JSON")
    return dict(claims)


def authorize_claims(
    client_id: str,
    claims: Mapping[str, Any],
    *,
    allowed: frozenset[str],
    sensitive: frozenset[str],
) -> None:
    """PermissionDenied unless every claim name is registered on the client."""
    for name in sorted(claims):
        if name in allowed or name in sensitive:
            continue
        kind = "security-sensitive claim" if is_sensitive(name) else "claim"
        raise PermissionDenied(
            f"client {client_id!r} may not set the {kind} {name!r}: it is not registered "
            "on the client"
        )
