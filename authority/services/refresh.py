"""Refresh: rotate a session's refresh token, replay within grace, and catch reuse.

Each refresh token is used once: the successor pair is sealed under the token it
replaces, so a client that lost the answer gets the same pair again within the grace
period, and a token used after that (or behind the head) revokes the whole session.
The rules are ``authority.domain.sessions``; this is their I/O.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from authority.crypto import SealError, open_with_token, seal_for_token
from authority.domain.clients import Client, GrantType
from authority.domain.clock import Clock
from authority.domain.errors import (
    GrantNotAllowed,
    Unauthenticated,
    Unavailable,
)
from authority.domain.events import SESSION
from authority.domain.revocation import RevocationKind
from authority.domain.sessions import Outcome, Session, decide
from authority.services.clients import ClientService
from authority.services.minter import (
    TokenMinter,
    TokenPair,
    plausible_refresh_token,
    refresh_token_hash,
)
from authority.services.revocations import RevocationService
from authority.store.base import Store

log = structlog.get_logger(__name__)

_BAD_REFRESH = "invalid refresh token"


class RefreshService:
    """Exchanges a refresh token for the session's next pair, exactly once."""

    def __init__(
        self,
        *,
        minter: TokenMinter,
        store: Store,
        clients: ClientService,
        revocations: RevocationService,
        clock: Clock,
        grace: timedelta,
    ) -> None:
        self._minter = minter
        self._store = store
        self._clients = clients
        self._revocations = revocations
        self._clock = clock
        self._grace = grace

    async def refresh(
        self, token: str, *, client_id: str = "", client_secret: str = ""
    ) -> TokenPair:
        """The next pair of the session; see ``authority.domain.sessions`` for the rules."""
        if not plausible_refresh_token(token):
            raise Unauthenticated(_BAD_REFRESH)
        token_hash = refresh_token_hash(token)
        for _ in range(3):  # a lost race is decided again on fresh data
            found = await self._store.find_refresh(token_hash)
            if found is None:
                raise Unauthenticated(_BAD_REFRESH)
            record, session, successor = found
            if client_id and client_id != session.client_id:
                raise Unauthenticated(_BAD_REFRESH)
            client = await self._session_client(session, client_secret)
            principal = await self._store.get_principal(session.subject)
            active = (
                principal is not None
                and not principal.disabled
                and client is not None
                and not client.disabled
            )
            now = self._clock.now()
            decision = decide(
                record,
                session,
                successor=successor,
                principal_active=active,
                now=now,
                grace=self._grace,
            )
            if decision.outcome is Outcome.REJECT:
                raise Unauthenticated(decision.reason)
            if decision.outcome is Outcome.REUSE:
                reuse = self._minter.event(
                    "session.refresh_reuse_detected",
                    SESSION,
                    session.id,
                    actor=session.subject,
                    subject=session.subject,
                    client_id=session.client_id,
                )
                await self._revocations.revoke(RevocationKind.SESSION, session.id, events=(reuse,))
                log.warning(
                    "security.refresh_reuse_detected",
                    session_id=session.id,
                    subject=session.subject,
                )
                raise Unauthenticated(decision.reason)
            if decision.outcome is Outcome.REPLAY:
                assert record.sealed_successor is not None
                try:
                    opened = open_with_token(token, record.sealed_successor, aad=token_hash)
                except SealError as exc:
                    raise Unauthenticated(_BAD_REFRESH) from exc
                return TokenPair.from_bytes(opened)
            assert client is not None
            changed_at = principal.credentials_changed_at if principal is not None else None
            pair, next_record = self._minter.successor(session, client, now, changed_at)
            sealed = seal_for_token(token, pair.to_bytes(), aad=token_hash)
            refreshed = self._minter.event(
                "session.refreshed",
                SESSION,
                session.id,
                actor=session.subject,
                subject=session.subject,
                client_id=session.client_id,
            )
            if await self._store.consume_refresh(
                token_hash,
                consumed_at=now,
                successor=next_record,
                sealed=sealed,
                events=(refreshed,),
            ):
                return pair
        raise Unavailable("the refresh could not be completed; retry")

    async def _session_client(self, session: Session, secret: str) -> Client | None:
        """Confidential clients must prove themselves on refresh too, and the client must
        (still) be allowed the refresh grant."""
        client = await self._clients.lookup(session.client_id)
        if client is not None and client.confidential:
            await self._clients.authenticate(client.id, secret, require_secret=True)
        if client is not None and GrantType.REFRESH_TOKEN not in client.grant_types:
            raise GrantNotAllowed(f"client {client.id!r} may not use the refresh_token grant")
        return client
