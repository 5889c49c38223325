"""Client registration and authentication.

Client secrets are 256-bit random values shown once; the store keeps SHA-256 only.
Authentication compares digests in constant time and spends the same work on an
unknown client id as on a known one. It reads the client row on every call (shared by
concurrent calls only through a read that starts after each of them: ``SharedReads``),
so a rotation, disable or delete is seen by the next call on every replica.

Why SHA-256 and not a password hash: a client secret is 256 random bits, so no
dictionary or brute force can reach it and a deliberately slow hash would add cost
without adding safety (argon2 is for the principals' passwords, chosen by people).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog

from authority.domain.claims import validate_allowed_claims
from authority.domain.clients import Client, GrantType, validate_client
from authority.domain.clock import Clock
from authority.domain.errors import ClientUnauthenticated, InvalidArgument, NotFound
from authority.domain.events import CLIENT, Event, new_event
from authority.services.revocations import RevocationService
from authority.services.shared_reads import SharedReads
from authority.store.base import ClientStore

log = structlog.get_logger(__name__)

_SECRET_PREFIX = "cs_"
_BAD_CLIENT = "invalid client credentials"
_DUMMY_DIGEST = hashlib.sha256(b"authority-unknown-client").digest()


def new_client_secret() -> str:
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class ClientService:
    def __init__(
        self,
        *,
        store: ClientStore,
        clock: Clock,
        default_client: Client,
        revocations: RevocationService,
        max_access_ttl_seconds: float,
    ) -> None:
        self._store = store
        self._reads: SharedReads[str, Client | None] = SharedReads(store.get_client)
        self._clock = clock
        self._default = default_client
        self._revocations = revocations
        self._max_access_ttl = max_access_ttl_seconds

    @property
    def default_client(self) -> Client:
        return self._default

    async def authenticate(self, client_id: str, secret: str, *, require_secret: bool) -> Client:
        """The client, if ``secret`` matches (or it is public and no secret is required).

        Every failure is the same UNAUTHENTICATED answer, and costs one digest comparison.
        """
        if not client_id:
            if require_secret:
                raise ClientUnauthenticated(_BAD_CLIENT)
            return self._default
        client = await self._reads.get(client_id)
        expected = client.secret_hash if client is not None and client.confidential else None
        presented = secret_digest(secret)
        matches = hmac.compare_digest(presented, expected or _DUMMY_DIGEST)
        if client is None:
            raise ClientUnauthenticated(_BAD_CLIENT)
        if client.confidential and not matches:
            raise ClientUnauthenticated(_BAD_CLIENT)
        if require_secret and not client.confidential:
            raise ClientUnauthenticated(_BAD_CLIENT)
        return client

    def check_secret(self, client: Client, secret: str) -> None:
        """``authenticate`` for a confidential client whose row was already read (Refresh
        reads it with the session): the same digest comparison and the same answer."""
        expected = client.secret_hash if client.confidential else None
        if not hmac.compare_digest(secret_digest(secret), expected or _DUMMY_DIGEST):
            raise ClientUnauthenticated(_BAD_CLIENT)
        if not client.confidential:
            raise ClientUnauthenticated(_BAD_CLIENT)

    async def lookup(self, client_id: str) -> Client | None:
        """The client a session belongs to ("" is the built-in default)."""
        if not client_id:
            return self._default
        return await self._store.get_client(client_id)

    async def create(self, template: Client, *, confidential: bool) -> tuple[Client, str]:
        """Store a client built from ``template``; returns it and its secret (once)."""
        secret = new_client_secret() if confidential else ""
        client = replace(
            template,
            secret_hash=secret_digest(secret) if confidential else b"",
            disabled=False,
            created_at=self._clock.now(),
        )
        validate_client(client, max_access_ttl=timedelta(seconds=self._max_access_ttl))
        event = self._event(
            "client.created",
            client.id,
            confidential=confidential,
            grant_types=sorted(g.value for g in client.grant_types),
            audiences=list(client.audiences),
            scopes=sorted(client.scopes),
            allowed_claims=sorted(client.allowed_claims),
            allowed_sensitive_claims=sorted(client.sensitive_claims),
        )
        await self._store.create_client(client, events=(event,))
        if client.sensitive_claims:
            log.warning(
                "security.sensitive_claims_allowed",
                client_id=client.id,
                claims=sorted(client.sensitive_claims),
            )
        return client, secret

    def _event(self, type_: str, client_id: str, **data: object) -> Event:
        """Ids and policy only: never the secret nor its digest."""
        return new_event(type_, CLIENT, client_id, at=self._clock.now(), data=data)

    async def get(self, client_id: str) -> Client:
        client = await self._store.get_client(client_id) if client_id else None
        if client is None:
            raise NotFound(f"no client with id {client_id!r}")
        return client

    async def rotate_secret(self, client_id: str, *, keep_tokens: bool = False) -> str:
        """A new secret; no call that authenticated with the old secret gets a token after
        this returns (the generation changes). Every token and session issued through the
        client until now is revoked too, unless ``keep_tokens`` (a routine rotation)."""
        client = await self.get(client_id)
        if not client.confidential:
            raise InvalidArgument(f"client {client_id!r} is public and has no secret")
        secret = new_client_secret()
        change = await self._revocations.change_client(
            client_id,
            revoke=not keep_tokens,
            secret_hash=secret_digest(secret),
            events=(
                self._event("client.secret_rotated", client_id, tokens_revoked=not keep_tokens),
            ),
        )
        if change.client is None:
            raise NotFound(f"no client with id {client_id!r}")
        return secret

    async def set_allowed_claims(
        self, client_id: str, allowed: Sequence[str], sensitive: Sequence[str]
    ) -> Client:
        """Replace the claim names the client may set in token exchange (both lists)."""
        ordinary, chosen = validate_allowed_claims(allowed, sensitive)
        await self.get(client_id)
        event = self._event(
            "client.claims_changed",
            client_id,
            allowed_claims=sorted(ordinary),
            allowed_sensitive_claims=sorted(chosen),
        )
        change = await self._revocations.change_client(
            client_id,
            revoke=False,
            allowed_claims=ordinary,
            sensitive_claims=chosen,
            events=(event,),
        )
        if change.client is None:
            raise NotFound(f"no client with id {client_id!r}")
        if chosen:
            log.warning(
                "security.sensitive_claims_allowed",
                client_id=client_id,
                claims=sorted(chosen),
            )
        return change.client

    async def set_disabled(self, client_id: str, disabled: bool) -> Client:
        """Disabling ends every session and token of the client; enabling ends none. Both
        are changes of the client: a call in flight that read the old state gets no token."""
        await self.get(client_id)
        event = self._event("client.disabled" if disabled else "client.enabled", client_id)
        change = await self._revocations.change_client(
            client_id, revoke=disabled, disabled=disabled, events=(event,)
        )
        if change.client is None:
            raise NotFound(f"no client with id {client_id!r}")
        return change.client

    async def delete(self, client_id: str) -> bool:
        if not client_id or await self._store.get_client(client_id) is None:
            return False
        change = await self._revocations.change_client(
            client_id,
            revoke=True,
            delete=True,
            events=(self._event("client.deleted", client_id),),
        )
        return change.client is not None


def default_client(
    *,
    audience: str,
    access_ttl_seconds: float,
    idle_ttl_seconds: float,
    absolute_ttl_seconds: float,
) -> Client:
    """The policy for password grants that name no client: a public client."""
    return Client(
        id="",
        secret_hash=b"",
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        audiences=(audience,),
        scopes=frozenset(),
        default_scopes=(),
        access_token_ttl=timedelta(seconds=access_ttl_seconds),
        session_idle_ttl=timedelta(seconds=idle_ttl_seconds),
        session_absolute_ttl=timedelta(seconds=absolute_ttl_seconds),
        disabled=False,
        created_at=datetime(1970, 1, 1, tzinfo=UTC),
    )
