"""The one port the HTTP OAuth endpoints call, and its adapter over the token services.

``OAuthGrants`` names exactly what the endpoints need; ``ServiceGrants`` forwards each call
to the same service method the gRPC ``TokenServicer`` calls, with the same arguments, so
limits, lockout, audit events and errors are the services' own. When the services are
reorganised, only ``ServiceGrants`` follows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from authority.domain.clock import Clock
from authority.domain.sources import source_key
from authority.domain.tokens import Verification
from authority.ports.rate_limits import RateLimit
from authority.services.tokens import TokenPair, TokenService
from authority.tokens.jws import VerificationKey, verify_signature
from authority.tokens.verifier import TokenVerifier

REFRESH_TOKEN_PREFIX = "rt_"  # authority.services.tokens.new_refresh_token


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

    async def authenticate_client(self, client: ClientCredentials, *, source: str) -> None:
        """A confidential client's credentials, or ClientUnauthenticated."""

    async def revoke(self, token: str, *, source: str) -> None: ...

    def introspect(self, token: str) -> Verification: ...


class ServiceGrants:
    """``OAuthGrants`` over ``TokenService``, the server's ``TokenVerifier`` and the
    per-source revoke limit (the objects the gRPC servicer holds)."""

    def __init__(
        self,
        *,
        tokens: TokenService,
        verifier: TokenVerifier,
        keys: Callable[[], Mapping[str, VerificationKey]],
        max_token_bytes: int,
        revoke_limit: RateLimit,
        clock: Clock,
    ) -> None:
        self._tokens = tokens
        self._verifier = verifier
        self._keys = keys
        self._max_token_bytes = max_token_bytes
        self._revoke_limit = revoke_limit
        self._clock = clock

    @property
    def password_grant_enabled(self) -> bool:
        return self._tokens.password_grant_enabled

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
        return await self._tokens.password_grant(
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
        return await self._tokens.client_credentials_grant(
            client.client_id, client.secret, audience=audience, scope=scope, source=source
        )

    async def refresh(self, token: str, client: ClientCredentials) -> TokenPair:
        return await self._tokens.refresh(
            token, client_id=client.client_id, client_secret=client.secret
        )

    async def authenticate_client(self, client: ClientCredentials, *, source: str) -> None:
        await self._tokens.authenticate_client(client.client_id, client.secret, source=source)

    async def revoke(self, token: str, *, source: str) -> None:
        """The gRPC ``Revoke`` of a token: the same per-source budget, then the same call."""
        await self._revoke_limit.acquire(source_key(source), self._clock.timestamp())
        if token.startswith(REFRESH_TOKEN_PREFIX):
            await self._tokens.revoke_refresh_token(token)
        else:
            await self._tokens.revoke_access_token(token)

    def introspect(self, token: str) -> Verification:
        """Verify's verdict, for whichever audience the token names (introspection asks
        whether the token is valid, not whether it is meant for the caller)."""
        verdict = self._verifier.verify(token)
        if verdict.valid:
            return verdict
        checked = verify_signature(token, self._keys(), max_bytes=self._max_token_bytes)
        if isinstance(checked, Verification):
            return checked
        return self._verifier.verify(token, checked.audience)
