"""Refresh: rotate a session's refresh token, replay within grace, and catch reuse.

Each refresh token is used once: the successor pair is sealed under the token it
replaces, so a client that lost the answer gets the same pair again within the grace
period, and a token used after that (or behind the head) revokes the whole session.
The rules are ``authority.domain.sessions``; this is their I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

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
from authority.store.base import RefreshState, Rotation, Store

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
            step = _Step(self, token, token_hash, client_id, client_secret)
            answer = await self._store.consume_refresh_with(token_hash, step)
            if isinstance(answer, TokenPair):
                return answer
            if isinstance(answer, _Replay):
                try:
                    opened = open_with_token(token, answer.sealed, aad=token_hash)
                except SealError as exc:
                    raise Unauthenticated(_BAD_REFRESH) from exc
                return TokenPair.from_bytes(opened)
            if isinstance(answer, _Reuse):
                await self._reuse_detected(answer.session, answer.reason)
            if isinstance(answer, _Unminted):
                raise answer.error
        raise Unavailable("the refresh could not be completed; retry")

    async def _reuse_detected(self, session: Session, reason: str) -> NoReturn:
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
        raise Unauthenticated(reason)


@dataclass(frozen=True, slots=True)
class _Replay:
    sealed: bytes  # the successor pair, sealed under the presented token


@dataclass(frozen=True, slots=True)
class _Unminted:
    """Minting failed (no active signing key): raised after the store call, so the store
    does not count it as a failed write (write health) nor drop its connection."""

    error: Unavailable


@dataclass(frozen=True, slots=True)
class _Reuse:
    session: Session
    reason: str


class _Step:
    """The decision on what the store read, and the successor to write. Pure computation:
    the store may run it on its own thread, inside its transaction (SQLite), so the
    read, the decision and the write are one trip there."""

    def __init__(
        self,
        service: RefreshService,
        token: str,
        token_hash: bytes,
        client_id: str,
        client_secret: str,
    ) -> None:
        self._service = service
        self._token = token
        self._token_hash = token_hash
        self._client_id = client_id
        self._client_secret = client_secret

    def __call__(
        self, state: RefreshState | None
    ) -> tuple[TokenPair | _Replay | _Reuse | _Unminted, Rotation | None]:
        if state is None:
            raise Unauthenticated(_BAD_REFRESH)
        session = state.session
        if self._client_id and self._client_id != session.client_id:
            raise Unauthenticated(_BAD_REFRESH)
        service = self._service
        client = self._session_client(state)
        principal = state.principal
        active = (
            principal is not None
            and not principal.disabled
            and client is not None
            and not client.disabled
        )
        now = service._clock.now()
        decision = decide(
            state.record,
            session,
            successor=state.successor,
            principal_active=active,
            now=now,
            grace=service._grace,
        )
        if decision.outcome is Outcome.REJECT:
            raise Unauthenticated(decision.reason)
        if decision.outcome is Outcome.REUSE:
            return _Reuse(session, decision.reason), None
        if decision.outcome is Outcome.REPLAY:
            assert state.record.sealed_successor is not None
            return _Replay(state.record.sealed_successor), None
        assert client is not None
        changed_at = principal.credentials_changed_at if principal is not None else None
        minter = service._minter
        try:
            pair, next_record = minter.successor(session, client, now, changed_at)
        except Unavailable as exc:
            return _Unminted(exc), None
        sealed = seal_for_token(self._token, pair.to_bytes(), aad=self._token_hash)
        refreshed = minter.event(
            "session.refreshed",
            SESSION,
            session.id,
            actor=session.subject,
            subject=session.subject,
            client_id=session.client_id,
        )
        return pair, Rotation(now, next_record, sealed, (refreshed,))

    def _session_client(self, state: RefreshState) -> Client | None:
        """Confidential clients must prove themselves on refresh too, and the client must
        (still) be allowed the refresh grant. The client's row came with the session's."""
        clients = self._service._clients
        client = clients.default_client if not state.session.client_id else state.client
        if client is not None and client.confidential:
            clients.check_secret(client, self._client_secret)
        if client is not None and GrantType.REFRESH_TOKEN not in client.grant_types:
            raise GrantNotAllowed(f"client {client.id!r} may not use the refresh_token grant")
        return client
