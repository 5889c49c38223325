"""Issuing access tokens. This is the minimal password grant; the lifecycle issue adds
refresh sessions, client policies and the other grants."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from authority.domain.principals import MAX_PASSWORD_LENGTH, validate_name
from authority.keys.manager import KeyManager
from authority.services.passwords import PasswordHasher
from authority.store.base import Store
from authority.tokens.jws import sign

_BAD_CREDENTIALS = "invalid principal or password"
MAX_AUDIENCES = 16
MAX_SCOPES = 64


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_at: int
    session_id: str
    audience: tuple[str, ...]
    scope: tuple[str, ...]


def _clean_list(values: Sequence[str], what: str, limit: int) -> tuple[str, ...]:
    if len(values) > limit:
        raise InvalidArgument(f"at most {limit} {what} values are allowed")
    for value in values:
        if not value or len(value) > 256 or any(c.isspace() for c in value):
            raise InvalidArgument(f"{what} values must be 1-256 characters without whitespace")
    return tuple(dict.fromkeys(values))


class TokenIssuer:
    def __init__(
        self,
        *,
        store: Store,
        keys: KeyManager,
        hasher: PasswordHasher,
        clock: Clock,
        issuer: str,
        default_audience: str,
        access_token_ttl: timedelta,
    ) -> None:
        self._store = store
        self._keys = keys
        self._hasher = hasher
        self._clock = clock
        self._issuer = issuer
        self._default_audience = default_audience
        self._ttl = int(access_token_ttl.total_seconds())

    async def issue_with_password(
        self,
        principal_name: str,
        password: str,
        *,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        client_id: str = "",
    ) -> IssuedToken:
        """Authenticate and mint. Every failure is the same UNAUTHENTICATED answer, and an
        unknown name costs one argon2 verification like a known one."""
        if not principal_name or not password:
            raise InvalidArgument("principal and password are required")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise Unauthenticated(_BAD_CREDENTIALS)
        audiences = _clean_list(audience, "audience", MAX_AUDIENCES) or (self._default_audience,)
        scopes = _clean_list(scope, "scope", MAX_SCOPES)
        try:
            name = validate_name(principal_name)
        except InvalidArgument:
            name = None
        principal = await self._store.get_principal_by_name(name) if name else None
        check = await self._hasher.verify(principal.password_hash if principal else None, password)
        if principal is None or not check.ok or principal.disabled:
            raise Unauthenticated(_BAD_CREDENTIALS)
        return self.mint(principal.id, audiences, scopes, client_id)

    def mint(
        self, subject: str, audience: tuple[str, ...], scope: tuple[str, ...], client_id: str
    ) -> IssuedToken:
        """Sign an access token for an already authenticated subject, in a new session."""
        signer = self._keys.snapshot().signer
        if signer is None:
            raise Unavailable("no signing key is active")
        now = int(self._clock.timestamp())
        session_id = "s_" + secrets.token_urlsafe(16)
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "exp": now + self._ttl,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "sid": session_id,
        }
        if client_id:
            claims["client_id"] = client_id
        if scope:
            claims["scope"] = " ".join(scope)
        return IssuedToken(sign(claims, signer), now + self._ttl, session_id, audience, scope)
