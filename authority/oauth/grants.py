"""The one port the HTTP OAuth endpoints call, and its adapter over the token services.

``OAuthGrants`` names exactly what the endpoints need; ``ServiceGrants`` forwards each call
to the same service method the gRPC ``TokenServicer`` calls, with the same arguments, so
limits, lockout, audit events and errors are the services' own. When the services are
reorganised, only ``ServiceGrants`` follows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from authority.domain.clock import Clock
from authority.domain.sources import source_key
from authority.domain.tokens import Verification
from authority.ports.rate_limits import RateLimit
from authority.services.grants import ClientAuthenticator, Grants
from authority.services.minter import TokenPair
from authority.services.refresh import RefreshService
from authority.services.token_revocation import TokenRevoker
from authority.tokens.verifier import TokenVerifier

REFRESH_TOKEN_PREFIX = "rt_"  # authority.services.minter.new_refresh_token


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What the request presented: an id (maybe "") and a secret (maybe "")."""

    client_id: str = ""
    secret: str = ""


class OAuthGrants(Protocol):
    """The token services, as the OAuth endpoints see them."""

    @property
    def password_grant_enabled(self) -> bool: ...

    async def password(
        self,
        username: str,
        password: str,
        client: ClientCredentials,
        *,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair: ...

    async def client_credentials(
        self,
        client: ClientCredentials,
        *,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair: ...

    async def refresh(self, token: str, client: ClientCredentials) -> TokenPair: ...

    async def token_exchange(
        self,
        client: ClientCredentials,
        *,
        subject_token: str,
        subject_token_type: str,
        actor_token: str,
        actor_token_type: str,
        requested_token_type: str,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair: ...

    async def authenticate_client(self, client: ClientCredentials, *, source: str) -> None:
        """A confidential client's credentials, or ClientUnauthenticated."""

    async def revoke(self, token: str, *, source: str) -> None: ...

    def introspect(self, token: str) -> Verification: ...


class ServiceGrants:
    """``OAuthGrants`` over the grants, the refresh service, the token revoker, the
    server's ``TokenVerifier`` and the per-source revoke limit (the objects the gRPC
    servicer holds)."""

    def __init__(
        self,
        *,
        grants: Grants,
        refresh: RefreshService,
        clients: ClientAuthenticator,
        revoker: TokenRevoker,
        verifier: TokenVerifier,
        revoke_limit: RateLimit,
        clock: Clock,
    ) -> None:
        self._grants = grants
        self._refresh = refresh
        self._clients = clients
        self._revoker = revoker
        self._verifier = verifier
        self._revoke_limit = revoke_limit
        self._clock = clock

    @property
    def password_grant_enabled(self) -> bool:
        return self._grants.password.enabled

    async def password(
        self,
        username: str,
        password: str,
        client: ClientCredentials,
        *,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair:
        return await self._grants.password.issue(
            username,
            password,
            client_id=client.client_id,
            client_secret=client.secret,
            audience=audience,
            scope=scope,
            source=source,
        )

    async def client_credentials(
        self,
        client: ClientCredentials,
        *,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair:
        return await self._grants.client_credentials.issue(
            client.client_id, client.secret, audience=audience, scope=scope, source=source
        )

    async def refresh(self, token: str, client: ClientCredentials) -> TokenPair:
        return await self._refresh.refresh(
            token, client_id=client.client_id, client_secret=client.secret
        )

    async def token_exchange(
        self,
        client: ClientCredentials,
        *,
        subject_token: str,
        subject_token_type: str,
        actor_token: str,
        actor_token_type: str,
        requested_token_type: str,
        audience: Sequence[str],
        scope: Sequence[str],
        source: str,
    ) -> TokenPair:
        return await self._grants.token_exchange.exchange(
            client.client_id,
            client.secret,
            subject_token=subject_token,
            subject_token_type=subject_token_type,
            actor_token=actor_token,
            actor_token_type=actor_token_type,
            requested_token_type=requested_token_type,
            audience=audience,
            scope=scope,
            source=source,
        )

    async def authenticate_client(self, client: ClientCredentials, *, source: str) -> None:
        await self._clients.authenticate(client.client_id, client.secret, source)

    async def revoke(self, token: str, *, source: str) -> None:
        """The gRPC ``Revoke`` of a token: the same per-source budget, then the same call."""
        await self._revoke_limit.acquire(source_key(source), self._clock.timestamp())
        if token.startswith(REFRESH_TOKEN_PREFIX):
            await self._revoker.revoke_refresh_token(token)
        else:
            await self._revoker.revoke_access_token(token)

    def introspect(self, token: str) -> Verification:
        """Verify's verdict, for whichever audience the token names (introspection asks
        whether the token is valid, not whether it is meant for the caller)."""
        verdict = self._verifier.verify(token)
        if verdict.valid:
            return verdict
        checked = self._verifier.signed_claims(token)
        if isinstance(checked, Verification):
            return checked
        return self._verifier.verify(token, checked.audience)
