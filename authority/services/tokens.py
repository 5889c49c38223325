"""Issuing, refreshing and revoking tokens: the grants and the refresh-session lifecycle.

Every grant counts the attempt before any credential is checked (so parallel
guesses cannot slip past the limits), gives every credential failure the same
UNAUTHENTICATED answer, and spends the same work on unknown names as on known ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from authority.crypto import SealError, open_with_token, seal_for_token
from authority.domain.claims import authorize_claims, check_exchange_claims
from authority.domain.clients import Client, GrantType, authorize
from authority.domain.clock import Clock
from authority.domain.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from authority.domain.events import PRINCIPAL, SESSION
from authority.domain.principals import principal_key, validate_password
from authority.domain.revocation import RevocationKind
from authority.domain.sessions import Outcome, RefreshRecord, Session, decide
from authority.domain.throttle import Throttled
from authority.domain.tokens import Verification
from authority.keys.manager import KeyManager
from authority.ports.attempts import AttemptGate
from authority.services.clients import ClientService
from authority.services.minter import (
    TokenMinter,
    TokenPair,
    new_refresh_token,
    plausible_refresh_token,
    refresh_token_hash,
)
from authority.services.passwords import PasswordHasher
from authority.services.revocations import RevocationService
from authority.store.base import Store
from authority.tokens.jws import VerificationKey, verify_signature

__all__ = ["TokenPair", "TokenService", "new_refresh_token", "refresh_token_hash"]

log = structlog.get_logger(__name__)

_BAD_CREDENTIALS = "invalid principal or password"
_BAD_REFRESH = "invalid refresh token"


def _login_password(password: str) -> str:
    """The normalised password, or "" (never matches) when creation would refuse it."""
    try:
        return validate_password(password, min_length=1)
    except InvalidArgument:
        return ""


class TokenService:
    def __init__(
        self,
        *,
        store: Store,
        keys: KeyManager,
        hasher: PasswordHasher,
        clock: Clock,
        issuer: str,
        clients: ClientService,
        revocations: RevocationService,
        gate: AttemptGate,
        grace: timedelta,
        leeway: timedelta,
        max_token_bytes: int,
    ) -> None:
        self._store = store
        self._keys = keys
        self._hasher = hasher
        self._clock = clock
        self._issuer = issuer
        self._clients = clients
        self._revocations = revocations
        self._gate = gate
        self._grace = grace
        self._leeway = leeway.total_seconds()
        self._max_token_bytes = max_token_bytes
        self._minter = TokenMinter(
            store=store, keys=keys, view=revocations.view, clock=clock, issuer=issuer, leeway=leeway
        )

    # -- grants ---------------------------------------------------------------

    async def password_grant(
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

    async def client_credentials_grant(
        self,
        client_id: str,
        client_secret: str,
        *,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        source: str = "",
    ) -> TokenPair:
        client = await self._authenticate_client(client_id, client_secret, source)
        grant = authorize(client, GrantType.CLIENT_CREDENTIALS, audience=audience, scope=scope)
        pair = self._minter.access_only(client.id, client, grant, {})
        await self._store.append_events(
            (self._minter.issued(pair, client.id, client, GrantType.CLIENT_CREDENTIALS),)
        )
        return pair

    async def token_exchange_grant(
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
        client = await self._authenticate_client(client_id, client_secret, source)
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

    async def _authenticate_client(self, client_id: str, secret: str, source: str) -> Client:
        if not client_id or not secret:
            raise InvalidArgument("client_id and client_secret are required")
        try:
            return await self._clients.authenticate(client_id, secret, require_secret=True)
        except Unauthenticated:
            await self._gate.client_failed(source, self._clock.timestamp())
            raise

    def issue_preauthenticated(
        self, subject: str, *, audience: Sequence[str] = (), scope: Sequence[str] = ()
    ) -> TokenPair:
        """An access token for a subject authenticated by other means, under the default
        client's policy. In-process only (the benchmark mints its token pools with it);
        no RPC reaches it."""
        client = self._clients.default_client
        grant = authorize(client, GrantType.PASSWORD, audience=audience, scope=scope)
        return self._minter.access_only(subject, client, grant, {})

    # -- refresh --------------------------------------------------------------

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
            raise PermissionDenied(f"client {client.id!r} may not use the refresh_token grant")
        return client

    # -- revocation -----------------------------------------------------------

    async def revoke_access_token(self, token: str, *, reason: str = "") -> datetime:
        """Revoke one access token by its jti, if it is ours; anything else succeeds silently.

        A token that is expired, or already revoked (by its jti, session, subject or
        client), is left alone: revoking it again would change nothing, so nothing is
        written (RFC 7009 idempotence, at no cost)."""
        now = self._clock.now()
        checked = verify_signature(
            token, self._verification_keys(), max_bytes=self._max_token_bytes
        )
        if isinstance(checked, Verification):  # not a token we signed: nothing to revoke
            return now
        expires_at = checked.expires_at + self._leeway
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
        """True when revoking the session could change nothing: it is revoked, or every
        access token it can have issued has expired (its end, or its newest refresh token's
        issue, lies more than an access token's life and the leeway behind)."""
        if session.revoked_at is not None:
            return True
        horizon = timedelta(seconds=self._revocations.horizon)
        last_issue = record.issued_at if successor is None and record.consumed_at is None else None
        return now >= session.absolute_expires_at + horizon or (
            last_issue is not None and now >= last_issue + horizon
        )

    def _verification_keys(self) -> Mapping[str, VerificationKey]:
        return self._keys.snapshot().verification_keys
