"""Issuing, refreshing and revoking tokens: the grants and the refresh-session lifecycle.

Every grant counts the attempt before any credential is checked (so parallel
guesses cannot slip past the limits), gives every credential failure the same
UNAUTHENTICATED answer, and spends the same work on unknown names as on known ones.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from authority.crypto import SealError, open_with_token, seal_for_token
from authority.domain.bounds import MAX_SESSION_TTL
from authority.domain.claims import authorize_claims, check_exchange_claims
from authority.domain.clients import Client, Grant, GrantType, authorize
from authority.domain.clock import Clock
from authority.domain.errors import (
    GrantDisabled,
    GrantNotAllowed,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from authority.domain.events import PRINCIPAL, SESSION, TOKEN, Event, new_event
from authority.domain.principals import (
    Principal,
    principal_key,
    validate_password,
)
from authority.domain.revocation import RevocationKind
from authority.domain.sessions import (
    Outcome,
    RefreshRecord,
    Session,
    decide,
    successor_expiry,
)
from authority.domain.throttle import Throttled
from authority.domain.tokens import Verification, issued_at
from authority.keys.manager import KeyManager
from authority.ports.attempts import AttemptGate
from authority.services.clients import ClientService
from authority.services.passwords import PasswordHasher
from authority.services.revocations import RevocationService
from authority.store.base import CredentialStore, EventLog, PrincipalStore, SessionStore
from authority.tokens.jws import VerificationKey, sign, verify_signature

log = structlog.get_logger(__name__)

_BAD_CREDENTIALS = "invalid principal or password"
_BAD_REFRESH = "invalid refresh token"
_REFRESH_PREFIX = "rt_"


def new_refresh_token() -> str:
    return _REFRESH_PREFIX + secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    access_expires_at: int
    session_id: str
    audience: tuple[str, ...]
    scope: tuple[str, ...]
    refresh_token: str = ""
    refresh_expires_at: datetime | None = None
    # The access token's jti, for the event of a sessionless token; in process only (not
    # sealed for a replay, so not part of a pair's identity).
    token_id: str = field(default="", compare=False)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "access_token": self.access_token,
                "access_expires_at": self.access_expires_at,
                "session_id": self.session_id,
                "audience": list(self.audience),
                "scope": list(self.scope),
                "refresh_token": self.refresh_token,
                "refresh_expires_at": (
                    self.refresh_expires_at.isoformat() if self.refresh_expires_at else None
                ),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenPair:
        raw = json.loads(data)
        expires = raw["refresh_expires_at"]
        return cls(
            access_token=raw["access_token"],
            access_expires_at=raw["access_expires_at"],
            session_id=raw["session_id"],
            audience=tuple(raw["audience"]),
            scope=tuple(raw["scope"]),
            refresh_token=raw["refresh_token"],
            refresh_expires_at=datetime.fromisoformat(expires) if expires else None,
        )


def _login_password(password: str) -> str:
    """The normalised password, or "" (never matches) when creation would refuse it."""
    try:
        return validate_password(password, min_length=1)
    except InvalidArgument:
        return ""


class TokenStore(PrincipalStore, CredentialStore, SessionStore, EventLog, Protocol):
    """The facets of the store that grants and refreshes use."""


class TokenService:
    def __init__(
        self,
        *,
        store: TokenStore,
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
        password_grant: bool = True,
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
        self.password_grant_enabled = password_grant

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
        if not self.password_grant_enabled:
            # Off for every API (AUTHORITY_OAUTH_PASSWORD_GRANT): nothing is checked or counted.
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
                (self._event("login.throttled", PRINCIPAL, normalized, name=normalized),)
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
                    self._event(
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
        login = self._event(
            "login.succeeded",
            PRINCIPAL,
            principal.id,
            actor=principal.id,
            name=normalized,
            client_id=client.id,
        )
        if GrantType.REFRESH_TOKEN not in client.grant_types:
            pair = await self._access_session(
                principal, client, grant, {}, GrantType.PASSWORD, login
            )
        else:
            pair = await self._start_session(principal, client, grant, login)
        if pair is None:
            # A credential change committed after the password was checked: this login is
            # ordered after it, where the password it checked no longer opens anything.
            await self._store.append_events(
                (
                    self._event(
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

    def _event(
        self,
        type_: str,
        aggregate_type: str,
        aggregate_id: str,
        *,
        actor: str | None = None,
        **data: object,
    ) -> Event:
        """Ids, names and policy only: never a password, token or secret."""
        return new_event(
            type_, aggregate_type, aggregate_id, at=self._clock.now(), data=data, actor=actor
        )

    def _issued(self, pair: TokenPair, subject: str, client: Client, grant: GrantType) -> Event:
        """The event of an access-only issuance."""
        return self._event(
            "token.issued",
            TOKEN,
            pair.session_id or pair.token_id,
            actor=subject,
            subject=subject,
            client_id=client.id,
            grant=grant.value,
            audience=list(pair.audience),
            scope=list(pair.scope),
            expires_at=pair.access_expires_at,
        )

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
        # No session: the token carries no `sid` (RFC 9068; deploy/envoy relies on it).
        pair = self._access_only(client.id, client, grant, {}, session=False)
        await self._store.append_events(
            (self._issued(pair, client.id, client, GrantType.CLIENT_CREDENTIALS),)
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
        pair = await self._access_session(principal, client, grant, extra, GrantType.TOKEN_EXCHANGE)
        if pair is None:
            raise PermissionDenied(
                "the subject was changed, disabled or deleted during the exchange; retry"
            )
        return pair

    async def authenticate_client(self, client_id: str, secret: str, *, source: str) -> Client:
        """A confidential client, checked and limited as the grants check theirs (the HTTP
        introspection and revocation endpoints authenticate their callers with it)."""
        return await self._authenticate_client(client_id, secret, source)

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
        return self._access_only(subject, client, grant, {}, session=False)

    # -- refresh --------------------------------------------------------------

    async def refresh(
        self, token: str, *, client_id: str = "", client_secret: str = ""
    ) -> TokenPair:
        """The next pair of the session; see ``authority.domain.sessions`` for the rules."""
        if not token.startswith(_REFRESH_PREFIX) or len(token) > 256:
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
                reuse = self._event(
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
            pair, next_record = self._successor(session, client, now, changed_at)
            sealed = seal_for_token(token, pair.to_bytes(), aad=token_hash)
            refreshed = self._event(
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

    def _successor(
        self, session: Session, client: Client, now: datetime, changed_at: datetime | None
    ) -> tuple[TokenPair, RefreshRecord]:
        token = new_refresh_token()
        record = RefreshRecord(
            token_hash=refresh_token_hash(token),
            session_id=session.id,
            issued_at=now,
            expires_at=successor_expiry(session, now),
        )
        access, expires, token_id = self._mint(
            subject=session.subject,
            audience=session.audience,
            scope=session.scope,
            client=client,
            session_id=session.id,
            extra={},
            changed_at=changed_at,
        )
        pair = TokenPair(
            access,
            expires,
            session.id,
            session.audience,
            session.scope,
            token,
            record.expires_at,
            token_id,
        )
        return pair, record

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
        if not token.startswith(_REFRESH_PREFIX) or len(token) > 256:
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

    # -- minting --------------------------------------------------------------

    async def _start_session(
        self, principal: Principal, client: Client, grant: Grant, *before: Event
    ) -> TokenPair | None:
        """A session, stored only while ``principal`` is still at the credential generation
        that was checked (None otherwise: nothing was stored, nothing is returned)."""
        now = self._clock.now()
        session = Session(
            id="s_" + secrets.token_urlsafe(16),
            subject=principal.id,
            client_id=client.id,
            audience=grant.audience,
            scope=grant.scope,
            created_at=now,
            # Clamped: a client stored before the bound existed must not break its logins.
            idle_ttl=min(client.session_idle_ttl, MAX_SESSION_TTL),
            absolute_expires_at=now + min(client.session_absolute_ttl, MAX_SESSION_TTL),
        )
        pair, record = self._successor(session, client, now, principal.credentials_changed_at)
        started = self._event(
            "session.started",
            SESSION,
            session.id,
            actor=principal.id,
            subject=principal.id,
            client_id=client.id,
            audience=list(session.audience),
            scope=list(session.scope),
        )
        stored = await self._store.create_session(
            session, record, events=(*before, started), generation=principal.generation
        )
        return pair if stored else None

    async def _access_session(
        self,
        principal: Principal,
        client: Client,
        grant: Grant,
        extra: dict[str, Any],
        grant_type: GrantType,
        *before: Event,
    ) -> TokenPair | None:
        """An access token without a refresh token, for a principal. Its ``sid`` is stored
        as a session without refresh tokens (until the token's end of life), under the same
        generation check as a login, so a credential change orders it the same way and
        revokes its token by ``sid``. None when the principal changed meanwhile."""
        pair = self._access_only(
            principal.id, client, grant, extra, changed_at=principal.credentials_changed_at
        )
        now = self._clock.now()
        session = Session(
            id=pair.session_id,
            subject=principal.id,
            client_id=client.id,
            audience=grant.audience,
            scope=grant.scope,
            created_at=now,
            idle_ttl=client.access_token_ttl,
            absolute_expires_at=datetime.fromtimestamp(pair.access_expires_at + self._leeway, UTC),
        )
        issued = self._issued(pair, principal.id, client, grant_type)
        stored = await self._store.create_session(
            session, None, events=(*before, issued), generation=principal.generation
        )
        return pair if stored else None

    def _not_before(
        self, subject: str, client_id: str, changed_at: datetime | None
    ) -> float | None:
        """The latest instant a new token of ``subject`` through ``client_id`` must be
        issued after: the principal's last credential change (read with the generation the
        session insert checks) and the subject and client revocations in the view."""
        times = [self._revocations.view.not_before(subject, client_id)]
        if changed_at is not None:
            times.append(changed_at.timestamp())
        return max((t for t in times if t is not None), default=None)

    def _access_only(
        self,
        subject: str,
        client: Client,
        grant: Grant,
        extra: dict[str, Any],
        *,
        changed_at: datetime | None = None,
        session: bool = True,
    ) -> TokenPair:
        """``session`` False: a token no session stands behind, so it has no ``sid``."""
        session_id = "s_" + secrets.token_urlsafe(16) if session else ""
        access, expires, token_id = self._mint(
            subject=subject,
            audience=grant.audience,
            scope=grant.scope,
            client=client,
            session_id=session_id,
            extra=extra,
            changed_at=changed_at,
        )
        return TokenPair(
            access, expires, session_id, grant.audience, grant.scope, token_id=token_id
        )

    def _mint(
        self,
        *,
        subject: str,
        audience: tuple[str, ...],
        scope: tuple[str, ...],
        client: Client,
        session_id: str,
        extra: dict[str, Any],
        changed_at: datetime | None = None,
    ) -> tuple[str, int, str]:
        """The token, its ``exp`` and its ``jti``. Every token carries ``client_id`` (RFC
        9068), and ``sid`` only when a session stands behind it. ``iat`` follows the
        subject's last credential change and any subject or client revocation this process
        knows of (``issued_at``); ``nbf`` and ``exp`` are whole seconds."""
        signer = self._keys.snapshot().signer
        if signer is None:
            raise Unavailable("no signing key is active")
        stamp = self._clock.timestamp()
        now = int(stamp)
        expires = now + int(client.access_token_ttl.total_seconds())
        claims: dict[str, Any] = {
            **extra,
            "iss": self._issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "exp": expires,
            "iat": issued_at(stamp, self._not_before(subject, client.claim_id, changed_at)),
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.claim_id,
        }
        if session_id:
            claims["sid"] = session_id
        if scope:
            claims["scope"] = " ".join(scope)
        return sign(claims, signer), expires, claims["jti"]
