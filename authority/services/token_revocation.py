"""Revoke by token (RFC 7009): the token itself is the credential, so anyone may call this.

A token that is not ours, expired, or already covered by a revocation succeeds
without writing anything; otherwise the revocation goes through the revocation
service like any other (durable, then the view, then the followers).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from authority.domain.clock import Clock
from authority.domain.revocation import RevocationKind
from authority.domain.sessions import RefreshRecord, Session
from authority.domain.tokens import Verification
from authority.services.minter import plausible_refresh_token, refresh_token_hash
from authority.services.revocations import RevocationService
from authority.store.base import Store
from authority.tokens.verifier import TokenVerifier


class TokenRevoker:
    """Revokes the access token or refresh session a caller presents."""

    def __init__(
        self,
        *,
        store: Store,
        verifier: TokenVerifier,
        revocations: RevocationService,
        clock: Clock,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._revocations = revocations
        self._clock = clock

    async def revoke_access_token(self, token: str, *, reason: str = "") -> datetime:
        """Revoke one access token by its jti, if it is ours; anything else succeeds silently.

        A token that is expired, or already revoked (by its jti, session, subject or
        client), is left alone: revoking it again would change nothing, so nothing is
        written (RFC 7009 idempotence, at no cost)."""
        now = self._clock.now()
        # The signature step of Verify itself: one JWS check for the whole server.
        checked = self._verifier.signed_claims(token)
        if isinstance(checked, Verification):  # not a token we signed: nothing to revoke
            return now
        expires_at = checked.expires_at + self._verifier.leeway
        if now.timestamp() >= expires_at or self._revocations.view.is_revoked(checked):
            return now
        return await self._revocations.revoke(
            RevocationKind.TOKEN, checked.token_id, expires_at=expires_at, reason=reason
        )

    async def revoke_refresh_token(self, token: str, *, reason: str = "") -> datetime:
        """Revoke the whole session of a refresh token; unknown tokens succeed silently, and
        so does a session already revoked or long over (nothing is written for those)."""
        now = self._clock.now()
        if not plausible_refresh_token(token):
            return now
        found = await self._store.find_refresh(refresh_token_hash(token))
        if found is None or self._session_is_over(*found, now=now):
            return now
        return await self._revocations.revoke(RevocationKind.SESSION, found[1].id, reason=reason)

    def _session_is_over(
        self,
        record: RefreshRecord,
        session: Session,
        successor: RefreshRecord | None,
        *,
        now: datetime,
    ) -> bool:
        """True when revoking the session could change nothing: it is revoked, or it can
        no longer be refreshed and every access token it can have issued has expired (its
        absolute end, or its head refresh token's own expiry, lies more than an access
        token's life and the leeway behind). An older token of the chain says nothing
        about the head's expiry: the session is revoked then."""
        if session.revoked_at is not None:
            return True
        horizon = timedelta(seconds=self._revocations.horizon)
        if now >= session.absolute_expires_at + horizon:
            return True
        is_head = successor is None and record.consumed_at is None
        return is_head and now >= record.expires_at + horizon
