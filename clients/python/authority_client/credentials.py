"""Credentials for the authority's revocation API (``CheckRevocations``, ``WatchRevocations``).

The revocation state names principals, sessions and clients, so the authority answers only
callers that present ``authorization: Bearer <token>``: an access token with the scope
``authority:revocations.read`` (or the admin credential). ``ClientCredentialsTokens``
obtains one with the client-credentials grant and renews it before it expires; pass it as
``credential=`` to ``CallbackRevocations``, ``WatchedRevocations`` or
``LocalVerifier.for_authority``. Any ``async () -> str`` works in its place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from authority.v1 import token_pb2, token_pb2_grpc
from authority_client.channels import aio_channel

REVOCATIONS_READ_SCOPE = "authority:revocations.read"

TokenProvider = Callable[[], Awaitable[str]]


class ClientCredentialsTokens:
    """A client-credentials access token, fetched on first use and renewed ``renew_before``
    seconds before it expires (single-flight: concurrent callers share one Issue)."""

    def __init__(
        self,
        authority: str | grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        *,
        scope: Sequence[str] = (REVOCATIONS_READ_SCOPE,),
        audience: Sequence[str] = (),
        renew_before: float = 60.0,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        self._authority = authority
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._owns_channel = False
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = tuple(scope)
        self.audience = tuple(audience)
        self.renew_before = renew_before
        self.timeout = timeout
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.issued = 0

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentialsTokens(client_id={self.client_id!r}, scope={self.scope!r})"

    async def __call__(self) -> str:
        return await self.token()

    async def token(self) -> str:
        if self._fresh():
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._fresh():
                await self._issue()
        return self._token

    def invalidate(self) -> None:
        """Forget the token (the authority refused it): the next call fetches a new one."""
        self._expires_at = 0.0

    def _fresh(self) -> bool:
        return bool(self._token) and self._clock() < self._expires_at

    async def _issue(self) -> None:
        if self._channel is None:
            if isinstance(self._authority, str):
                self._channel = aio_channel(self._authority, self._credentials)
                self._owns_channel = True
            else:
                self._channel = self._authority
        stub = token_pb2_grpc.TokenServiceStub(self._channel)
        request = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id=self.client_id, client_secret=self._client_secret
            ),
            scope=list(self.scope),
            audience=list(self.audience),
        )
        now = self._clock()
        response = await stub.Issue(request, timeout=self.timeout)
        pair = response.tokens
        expires = pair.access_token_expires_at.seconds + pair.access_token_expires_at.nanos / 1e9
        lifetime = max(0.0, expires - now)
        self._token = pair.access_token
        # Renew early, but not before half of a short-lived token's life has passed.
        self._expires_at = now + max(lifetime / 2, lifetime - self.renew_before)
        self.issued += 1

    async def aclose(self) -> None:
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
        self._channel = None


async def call_metadata(
    credential: TokenProvider | None, static: tuple[tuple[str, str | bytes], ...]
) -> tuple[tuple[str, str | bytes], ...] | None:
    """The metadata of one revocation RPC: the credential's bearer token, then ``static``."""
    if credential is None:
        return static or None
    return (("authorization", f"Bearer {await credential()}"), *static)


def refused(error: grpc.aio.AioRpcError, credential: TokenProvider | None) -> None:
    """After UNAUTHENTICATED (an expired or revoked token), fetch a new token next time."""
    if error.code() is grpc.StatusCode.UNAUTHENTICATED:
        invalidate = getattr(credential, "invalidate", None)
        if callable(invalidate):
            invalidate()
