"""The grants: how a caller proves who it is to get tokens, each over the one minter.

Every grant counts the attempt before any credential is checked (so parallel
guesses cannot slip past the limits), gives every credential failure the same
UNAUTHENTICATED answer, and spends the same work on unknown names as on known ones.
What a token then holds, and how its session is stored, is the minter's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authority.domain.claims import authorize_claims, check_exchange_claims
from authority.domain.clients import Client, GrantType, authorize
from authority.domain.clock import Clock
from authority.domain.errors import (
    GrantDisabled,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from authority.domain.events import PRINCIPAL
from authority.domain.principals import principal_key, validate_password
from authority.domain.throttle import Throttled
from authority.ports.attempts import AttemptGate
from authority.services.clients import ClientService
from authority.services.minter import TokenMinter, TokenPair
from authority.services.passwords import PasswordHasher
from authority.store.base import Store

_BAD_CREDENTIALS = "invalid principal or password"


def _login_password(password: str) -> str:
    """The normalised password, or "" (never matches) when creation would refuse it."""
    try:
        return validate_password(password, min_length=1)
    except InvalidArgument:
        return ""


class PasswordGrant:
    """A principal's name and password (through a public or confidential client)."""

    def __init__(
        self,
        *,
        minter: TokenMinter,
        store: Store,
        hasher: PasswordHasher,
        clients: ClientService,
        gate: AttemptGate,
        clock: Clock,
        enabled: bool = True,
    ) -> None:
        self._minter = minter
        self._store = store
        self._hasher = hasher
        self._clients = clients
        self._gate = gate
        self._clock = clock
        # AUTHORITY_OAUTH_PASSWORD_GRANT: a legacy grant (RFC 9700), off for every API.
        self.enabled = enabled

    async def issue(
        self,
        name: str,
        password: str,
        *,
        client_id: str = "",
        client_secret: str = "",
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        source: str = "",
    ) -> TokenPair:
        if not self.enabled:
            # Nothing is checked or counted: the grant does not exist on this server.
            raise GrantDisabled("the password grant is disabled on this server")
        if not name or not password:
            raise InvalidArgument("principal and password are required")
        # A malformed name cannot exist, so refusing it early reveals nothing, and it
        # keeps oversized keys out of the limiter. Limits, lockout and lookup all use the
        # canonical name, so no spelling of a name is a different key.
        normalized = principal_key(name)
        try:
            await self._gate.admit(normalized, source, self._clock.timestamp())
        except Throttled:
            await self._store.append_events(
                (self._minter.event("login.throttled", PRINCIPAL, normalized, name=normalized),)
            )
            raise
        client = await self._clients.authenticate(client_id, client_secret, require_secret=False)
        grant = authorize(client, GrantType.PASSWORD, audience=audience, scope=scope)
        principal = await self._store.get_principal_by_name(normalized)
        # Over-long passwords are refused, but only after the same work as any other. The
        # length is judged on the normalised form, as at creation.
        candidate = _login_password(password)
        stored = principal.password_hash if principal else None
        check = await self._hasher.verify(stored, candidate)
        legacy = False
        if not check.ok and candidate and candidate != password:
            # Hashes made before passwords were normalised hold the raw form: try it once,
            # and rehash with the normalised form below. Whether this second check runs
            # depends on the input only, so unknown names cost the same as known ones.
            check = await self._hasher.verify(stored, password)
            legacy = check.ok
        if principal is None or not check.ok or not candidate or principal.disabled:
            await self._gate.failed(normalized, source, self._clock.timestamp())
            # The name, never the password tried; the id when the principal exists.
            target = principal.id if principal is not None else normalized
            await self._store.append_events(
                (
                    self._minter.event(
                        "login.failed",
                        PRINCIPAL,
                        target,
                        actor=target,
                        name=normalized,
                        client_id=client.id,
                    ),
                )
            )
            raise Unauthenticated(_BAD_CREDENTIALS)
        await self._gate.succeeded(normalized, source, self._clock.timestamp())
        if check.needs_rehash or legacy:
            # Only while the password checked is still the stored one.
            await self._store.rehash_password(
                principal.id,
                generation=principal.generation,
                password_hash=await self._hasher.hash(candidate),
            )
        login = self._minter.event(
            "login.succeeded",
            PRINCIPAL,
            principal.id,
            actor=principal.id,
            name=normalized,
            client_id=client.id,
        )
        if GrantType.REFRESH_TOKEN not in client.grant_types:
            pair = await self._minter.access_session(
                principal, client, grant, {}, GrantType.PASSWORD, login
            )
        else:
            pair = await self._minter.start_session(principal, client, grant, login)
        if pair is None:
            # A credential change committed after the password was checked: this login is
            # ordered after it, where the password it checked no longer opens anything.
            await self._store.append_events(
                (
                    self._minter.event(
                        "login.failed",
                        PRINCIPAL,
                        principal.id,
                        actor=principal.id,
                        name=normalized,
                        client_id=client.id,
                        reason="credentials_changed",
                    ),
                )
            )
            raise Unauthenticated(_BAD_CREDENTIALS)
        return pair


class ClientAuthenticator:
    """A confidential client's id and secret, each failure counted against its source."""

    def __init__(self, *, clients: ClientService, gate: AttemptGate, clock: Clock) -> None:
        self._clients = clients
        self._gate = gate
        self._clock = clock

    async def authenticate(self, client_id: str, secret: str, source: str) -> Client:
        if not client_id or not secret:
            raise InvalidArgument("client_id and client_secret are required")
        try:
            return await self._clients.authenticate(client_id, secret, require_secret=True)
        except Unauthenticated:
            await self._gate.client_failed(source, self._clock.timestamp())
            raise


class ClientCredentialsGrant:
    """A client acting for itself: an access token whose subject is the client."""

    def __init__(self, *, minter: TokenMinter, store: Store, clients: ClientAuthenticator) -> None:
        self._minter = minter
        self._store = store
        self._clients = clients

    async def issue(
        self,
        client_id: str,
        client_secret: str,
        *,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        source: str = "",
    ) -> TokenPair:
        client = await self._clients.authenticate(client_id, client_secret, source)
        grant = authorize(client, GrantType.CLIENT_CREDENTIALS, audience=audience, scope=scope)
        # No session: the token carries no `sid` (RFC 9068; deploy/envoy relies on it).
        pair = self._minter.access_only(client.id, client, grant, {}, session=False)
        await self._store.append_events(
            (self._minter.issued(pair, client.id, client, GrantType.CLIENT_CREDENTIALS),)
        )
        return pair


class TokenExchangeGrant:
    """A trusted client acting for a principal, with the extra claims it is allowed."""

    def __init__(self, *, minter: TokenMinter, store: Store, clients: ClientAuthenticator) -> None:
        self._minter = minter
        self._store = store
        self._clients = clients

    async def issue(
        self,
        client_id: str,
        client_secret: str,
        subject: str,
        *,
        claims: Mapping[str, Any] | None = None,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        source: str = "",
    ) -> TokenPair:
        if not subject:
            raise InvalidArgument("token exchange needs the subject's principal name")
        extra = check_exchange_claims(claims or {})
        client = await self._clients.authenticate(client_id, client_secret, source)
        grant = authorize(client, GrantType.TOKEN_EXCHANGE, audience=audience, scope=scope)
        authorize_claims(
            client.id, extra, allowed=client.allowed_claims, sensitive=client.sensitive_claims
        )
        principal = await self._store.get_principal_by_name(principal_key(subject))
        if principal is None or principal.disabled:
            raise PermissionDenied("the subject does not exist or is disabled")
        pair = await self._minter.access_session(
            principal, client, grant, extra, GrantType.TOKEN_EXCHANGE
        )
        if pair is None:
            raise PermissionDenied(
                "the subject was changed, disabled or deleted during the exchange; retry"
            )
        return pair


@dataclass(frozen=True, slots=True)
class Grants:
    """The grants Issue dispatches to."""

    password: PasswordGrant
    client_credentials: ClientCredentialsGrant
    token_exchange: TokenExchangeGrant
