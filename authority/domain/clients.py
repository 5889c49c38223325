"""OAuth clients and the pure rules for what a grant may obtain."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from authority.domain.bounds import MAX_SESSION_TTL, check_duration
from authority.domain.claims import validate_allowed_claims
from authority.domain.errors import (
    AudienceNotAllowed,
    GrantNotAllowed,
    InvalidArgument,
    PermissionDenied,
    ScopeNotAllowed,
)

CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # fullmatch: `$` would admit a final "\n"
DEFAULT_CLIENT_ID = ""  # password grants that name no client use the built-in default policy
# The `client_id` claim of the default client's tokens (RFC 9068 requires one on every
# access token). Not a valid registered id (CLIENT_ID has no ':'), so no client shares it.
DEFAULT_CLIENT_CLAIM = "authority:default"
MAX_LIST = 64
PRINCIPAL_ID_PREFIX = "p_"  # principal ids; reserved so a client's `sub` never equals one


class GrantType(StrEnum):
    PASSWORD = "password"
    CLIENT_CREDENTIALS = "client_credentials"
    TOKEN_EXCHANGE = "token_exchange"
    REFRESH_TOKEN = "refresh_token"


@dataclass(frozen=True, slots=True)
class Client:
    """A client as stored. ``secret_hash`` is SHA-256 of the secret; empty for public clients."""

    id: str
    secret_hash: bytes
    grant_types: frozenset[GrantType]
    audiences: tuple[str, ...]
    scopes: frozenset[str]
    default_scopes: tuple[str, ...]
    access_token_ttl: timedelta
    session_idle_ttl: timedelta
    session_absolute_ttl: timedelta
    disabled: bool
    created_at: datetime
    # Claim names the client may set in token exchange (authority.domain.claims); the
    # security-sensitive ones only in ``sensitive_claims``, registered on purpose.
    allowed_claims: frozenset[str] = frozenset()
    sensitive_claims: frozenset[str] = frozenset()
    # Grows with every change of the client: a token minted for it is committed only
    # while the stored row is still at the generation it was authenticated under.
    # ``changed_at`` is its last revocation instant: new tokens carry a later ``iat``.
    generation: int = 0
    changed_at: datetime | None = None

    @property
    def confidential(self) -> bool:
        return bool(self.secret_hash)

    @property
    def claim_id(self) -> str:
        """The ``client_id`` claim of this client's access tokens (RFC 9068 section 2.2)."""
        return self.id or DEFAULT_CLIENT_CLAIM


@dataclass(frozen=True, slots=True)
class Grant:
    """What a request is allowed to obtain, after policy."""

    audience: tuple[str, ...]
    scope: tuple[str, ...]


def clean_values(values: Sequence[str], what: str, limit: int = MAX_LIST) -> tuple[str, ...]:
    """De-duplicated, validated audience or scope values (order kept)."""
    if len(values) > limit:
        raise InvalidArgument(f"at most {limit} {what} values are allowed")
    for value in values:
        if not value or len(value) > 256 or any(c.isspace() or not c.isprintable() for c in value):
            raise InvalidArgument(
                f"{what} values must be 1-256 printable characters without spaces"
            )
    return tuple(dict.fromkeys(values))


def validate_client(client: Client, *, max_access_ttl: timedelta) -> None:
    """Reject a client policy that could not work or would break key retirement."""
    if not CLIENT_ID.fullmatch(client.id):
        raise InvalidArgument("a client id is 1-128 characters of letters, digits, '.', '_', '-'")
    if client.id.startswith(PRINCIPAL_ID_PREFIX):
        # A client's tokens carry its id as `sub`: it must never equal a principal's.
        raise InvalidArgument(f"client ids may not start with {PRINCIPAL_ID_PREFIX!r}")
    if not client.grant_types:
        raise InvalidArgument("a client needs at least one grant type")
    if not client.audiences:
        raise InvalidArgument("a client needs at least one audience")
    if not set(client.default_scopes) <= client.scopes:
        raise InvalidArgument("default scopes must be among the allowed scopes")
    if not timedelta(seconds=1) <= client.access_token_ttl <= max_access_ttl:
        raise InvalidArgument(
            f"the access-token TTL must be between 1 s and {int(max_access_ttl.total_seconds())} s"
        )
    for what, ttl in (
        ("session_idle_ttl", client.session_idle_ttl),
        ("session_absolute_ttl", client.session_absolute_ttl),
    ):
        check_duration(ttl, what, minimum=timedelta(seconds=1), maximum=MAX_SESSION_TTL)
    if client.session_idle_ttl > client.session_absolute_ttl:
        raise InvalidArgument("the idle session TTL must not exceed the absolute one")
    validate_allowed_claims(client.allowed_claims, client.sensitive_claims)
    needs_secret = {GrantType.CLIENT_CREDENTIALS, GrantType.TOKEN_EXCHANGE}
    if client.grant_types & needs_secret and not client.confidential:
        raise InvalidArgument("client_credentials and token_exchange need a confidential client")


def authorize(
    client: Client,
    grant_type: GrantType,
    *,
    audience: Sequence[str],
    scope: Sequence[str],
) -> Grant:
    """The audiences and scopes the request may have under the client's policy."""
    if client.disabled:
        raise PermissionDenied(f"client {client.id!r} is disabled")
    if grant_type not in client.grant_types:
        raise GrantNotAllowed(f"client {client.id!r} may not use the {grant_type.value} grant")
    audiences = clean_values(audience, "audience") or client.audiences[:1]
    refused = [a for a in audiences if a not in client.audiences]
    if refused:
        raise AudienceNotAllowed(f"audience {refused[0]!r} is not allowed for this client")
    scopes = clean_values(scope, "scope") or client.default_scopes
    refused = [s for s in scopes if s not in client.scopes]
    if refused:
        raise ScopeNotAllowed(f"scope {refused[0]!r} is not allowed for this client")
    return Grant(audience=audiences, scope=scopes)
