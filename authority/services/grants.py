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
from authority.domain.clients import Client, Grant, GrantType, authorize
from authority.domain.clock import Clock
from authority.domain.errors import (
    ClientUnauthenticated,
    GrantDisabled,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from authority.domain.events import PRINCIPAL
from authority.domain.exchange import (
    act_claim,
    check_meant_for,
    check_token_types,
    exchange_scope,
    not_after,
)
from authority.domain.principals import principal_key, validate_password
from authority.domain.throttle import Throttled
from authority.domain.tokens import AccessClaims, Verification
from authority.ports.attempts import AttemptGate
from authority.services.clients import ClientService
from authority.services.group_commit import GroupCommit
from authority.services.minter import TokenMinter, TokenPair
from authority.services.passwords import PasswordHasher
from authority.store.base import IssuedToken, Store
from authority.tokens.verifier import TokenVerifier

_BAD_CREDENTIALS = "invalid principal or password"
_BAD_CLIENT = "invalid client credentials"


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
    """A client acting for itself: an access token whose subject is the client. Nothing is
    stored but the ``token.issued`` event, committed before the token is returned, and only
    while the client's row is still enabled and at the generation it was authenticated
    under (``record_issued``): a client change that committed meanwhile makes the call
    UNAUTHENTICATED, and it returns no token. The events of concurrent calls share a
    transaction (``GroupCommit``); a refused one fails only its own call."""

    def __init__(self, *, minter: TokenMinter, store: Store, clients: ClientAuthenticator) -> None:
        self._minter = minter
        self._events: GroupCommit[IssuedToken] = GroupCommit(store.record_issued)
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
        issued = self._minter.issued_token(pair, client, GrantType.CLIENT_CREDENTIALS)
        if not await self._events.append(issued):
            # Disabled, deleted or its secret rotated after this call read it.
            raise ClientUnauthenticated(_BAD_CLIENT)
        return pair


class TokenExchangeGrant:
    """Token exchange: RFC 8693 (``exchange``: a subject token, maybe an actor token, for
    a narrower access token), and the deprecated form (``issue``: a trusted client names a
    principal, with the extra claims it is allowed), kept for one release."""

    def __init__(
        self,
        *,
        minter: TokenMinter,
        store: Store,
        clients: ClientAuthenticator,
        verifier: TokenVerifier,
    ) -> None:
        self._minter = minter
        self._store = store
        self._clients = clients
        self._verifier = verifier

    async def exchange(
        self,
        client_id: str,
        client_secret: str,
        *,
        subject_token: str,
        subject_token_type: str,
        actor_token: str = "",
        actor_token_type: str = "",
        requested_token_type: str = "",
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        source: str = "",
    ) -> TokenPair:
        """An access token for the subject token's principal, for ``audience``, with at
        most the subject token's scope, never outliving the tokens it came from, with
        ``act`` naming the actor (rules: ``authority.domain.exchange``)."""
        check_token_types(
            subject_token=subject_token,
            subject_token_type=subject_token_type,
            actor_token=actor_token,
            actor_token_type=actor_token_type,
            requested_token_type=requested_token_type,
        )
        # Confidential clients only (the authenticator requires a secret); the tokens are
        # looked at only after the client proved who it is.
        client = await self._clients.authenticate(client_id, client_secret, source)
        grant = authorize(client, GrantType.TOKEN_EXCHANGE, audience=audience, scope=scope)
        subject = self._valid(subject_token, client.id, "subject token")
        actor = self._valid(actor_token, client.id, "actor token") if actor_token else None
        extra = act_claim(subject, actor)
        scopes = exchange_scope(grant.scope if scope else (), subject.scope, client.scopes)
        # Only a principal's token has a session (a client's own token has none), so a
        # client id can never be taken for a principal's id here.
        principal = await self._store.get_principal(subject.subject) if subject.session_id else None
        if principal is None or principal.disabled:
            # A client's own token (client credentials) has no principal behind it.
            raise Unauthenticated("the subject token's subject is not an enabled principal")
        changed = principal.credentials_changed_at
        if changed is not None and subject.issued_at <= changed.timestamp():
            raise Unauthenticated("the subject token predates the subject's credential change")
        pair = await self._minter.access_session(
            principal,
            client,
            Grant(audience=grant.audience, scope=scopes),
            extra,
            GrantType.TOKEN_EXCHANGE,
            not_after=not_after(subject, actor),
        )
        if pair is None:
            if await self._client_changed(client):
                raise ClientUnauthenticated(_BAD_CLIENT)
            raise Unauthenticated("the subject's credentials changed during the exchange")
        return pair

    async def _client_changed(self, client: Client) -> bool:
        """Whether ``client`` is no longer as authenticated (disabled, deleted, changed):
        then a refused session write is the client's doing, and the answer is the one an
        unknown or disabled client gets."""
        stored = await self._store.get_client(client.id)
        return stored is None or stored.disabled or stored.generation != client.generation

    def _valid(self, token: str, client_id: str, what: str) -> AccessClaims:
        """The claims of one of our valid access tokens (signature, type, issuer, time,
        revocation: the one verifier), meant for ``client_id``; invalid_grant otherwise."""
        signed = self._verifier.signed_claims(token)
        if isinstance(signed, Verification):
            raise Unauthenticated(f"the {what} is not valid: {signed.detail}")
        verdict = self._verifier.verify(token, signed.audience)
        if verdict.claims is None:
            raise Unauthenticated(f"the {what} is not valid: {verdict.detail}")
        check_meant_for(verdict.claims, client_id, what)
        return verdict.claims

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
            if await self._client_changed(client):
                raise ClientUnauthenticated(_BAD_CLIENT)
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
