"""The token minter: signs access tokens, starts sessions and builds the events that say so.

Every grant and the refresh service issue through this one place, so the rules a
token must follow are written once: ``iat`` after the subject's last credential
change and any subject or client revocation known here, sessions stored only while
the principal is still at the credential generation that was checked, and session
lifetimes clamped to the bound.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from authority.domain.bounds import MAX_SESSION_TTL
from authority.domain.clients import Client, Grant, GrantType
from authority.domain.clock import Clock
from authority.domain.errors import Unavailable
from authority.domain.events import SESSION, TOKEN, Event, new_event
from authority.domain.identifiers import random_urlsafe
from authority.domain.principals import Principal
from authority.domain.revocation import RevocationSet
from authority.domain.sessions import RefreshRecord, Session, successor_expiry
from authority.domain.tokens import issued_at
from authority.keys.manager import KeyManager
from authority.store.base import IssuedToken, Store
from authority.tokens.jws import sign

REFRESH_PREFIX = "rt_"
_MAX_REFRESH_TOKEN = 256


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def plausible_refresh_token(token: str) -> bool:
    """Whether ``token`` has the shape of one of ours (worth looking up at all)."""
    return token.startswith(REFRESH_PREFIX) and len(token) <= _MAX_REFRESH_TOKEN


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
    # The access token's sub, for the call's rpc line; in process only, as token_id (a
    # replayed pair has none, and the line reads it from the token instead).
    subject: str = field(default="", compare=False)
    # The access token's iat, in process only, as token_id (what a client's row records).
    issued_at: float = field(default=0.0, compare=False)

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


class TokenMinter:
    """Signs access tokens, stores the sessions they belong to, and builds the events."""

    def __init__(
        self,
        *,
        store: Store,
        keys: KeyManager,
        view: RevocationSet,
        clock: Clock,
        issuer: str,
        leeway: timedelta,
    ) -> None:
        self._store = store
        self._keys = keys
        self._view = view
        self._clock = clock
        self._issuer = issuer
        self._leeway = leeway.total_seconds()

    # -- events ---------------------------------------------------------------

    def event(
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

    def issued(self, pair: TokenPair, subject: str, client: Client, grant: GrantType) -> Event:
        """The event of an access-only issuance."""
        return self.event(
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

    def issued_token(self, pair: TokenPair, client: Client, grant: GrantType) -> IssuedToken:
        """A client's own token, to commit only while the client is as authenticated."""
        event = self.issued(pair, client.id, client, grant)
        return IssuedToken(event, client.id, client.generation, pair.issued_at)

    # -- sessions -------------------------------------------------------------

    async def start_session(
        self, principal: Principal, client: Client, grant: Grant, *before: Event
    ) -> TokenPair | None:
        """A session, stored only while ``principal`` is still at the credential generation
        that was checked (None otherwise: nothing was stored, nothing is returned)."""
        now = self._clock.now()
        session = Session(
            id="s_" + random_urlsafe(16),
            subject=principal.id,
            client_id=client.id,
            audience=grant.audience,
            scope=grant.scope,
            created_at=now,
            # Clamped: a client stored before the bound existed must not break its logins.
            idle_ttl=min(client.session_idle_ttl, MAX_SESSION_TTL),
            absolute_expires_at=now + min(client.session_absolute_ttl, MAX_SESSION_TTL),
        )
        pair, record = self.successor(session, client, now, principal.credentials_changed_at)
        started = self.event(
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
            session,
            record,
            events=(*before, started),
            generation=principal.generation,
            client_generation=_generation(client),
        )
        return pair if stored else None

    async def access_session(
        self,
        principal: Principal,
        client: Client,
        grant: Grant,
        extra: dict[str, Any],
        grant_type: GrantType,
        *before: Event,
        not_after: int | None = None,
    ) -> TokenPair | None:
        """An access token without a refresh token, for a principal. Its ``sid`` is stored
        as a session without refresh tokens (until the token's end of life), under the same
        generation check as a login, so a credential change orders it the same way and
        revokes its token by ``sid``; the same for a change of the client. None when the
        principal or the client changed meanwhile."""
        pair = self.access_only(
            principal.id,
            client,
            grant,
            extra,
            changed_at=principal.credentials_changed_at,
            not_after=not_after,
        )
        session = Session(
            id=pair.session_id,
            subject=principal.id,
            client_id=client.id,
            audience=grant.audience,
            scope=grant.scope,
            # Never before the token's iat: a client revocation covers what it ends by it.
            created_at=_not_before_iat(self._clock.now(), pair.issued_at),
            idle_ttl=client.access_token_ttl,
            absolute_expires_at=datetime.fromtimestamp(pair.access_expires_at + self._leeway, UTC),
        )
        issued = self.issued(pair, principal.id, client, grant_type)
        stored = await self._store.create_session(
            session,
            None,
            events=(*before, issued),
            generation=principal.generation,
            client_generation=_generation(client),
        )
        return pair if stored else None

    def successor(
        self, session: Session, client: Client, now: datetime, changed_at: datetime | None
    ) -> tuple[TokenPair, RefreshRecord]:
        """The session's next pair and the record of its refresh token (not stored). The
        record is issued no earlier than the access token's ``iat``: a client revocation
        covers the tokens of the sessions it ends by their records."""
        token = new_refresh_token()
        access, expires, token_id, iat = self._mint(
            subject=session.subject,
            audience=session.audience,
            scope=session.scope,
            client=client,
            session_id=session.id,
            extra={},
            changed_at=changed_at,
        )
        record = RefreshRecord(
            token_hash=refresh_token_hash(token),
            session_id=session.id,
            issued_at=_not_before_iat(now, iat),
            expires_at=successor_expiry(session, now),
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
            session.subject,
            iat,
        )
        return pair, record

    # -- access tokens --------------------------------------------------------

    def access_only(
        self,
        subject: str,
        client: Client,
        grant: Grant,
        extra: dict[str, Any],
        *,
        changed_at: datetime | None = None,
        session: bool = True,
        not_after: int | None = None,
    ) -> TokenPair:
        """An access token under a fresh ``sid`` that nothing stores: the caller stores the
        session (``access_session``). With ``session`` False (a client acting for itself)
        no session stands behind it, so it carries no ``sid`` (RFC 9068)."""
        session_id = "s_" + random_urlsafe(16) if session else ""
        access, expires, token_id, iat = self._mint(
            subject=subject,
            audience=grant.audience,
            scope=grant.scope,
            client=client,
            session_id=session_id,
            extra=extra,
            changed_at=changed_at,
            not_after=not_after,
        )
        return TokenPair(
            access,
            expires,
            session_id,
            grant.audience,
            grant.scope,
            token_id=token_id,
            subject=subject,
            issued_at=iat,
        )

    def _not_before(
        self, subject: str, client: Client, changed_at: datetime | None
    ) -> float | None:
        """The latest instant a new token of ``subject`` through ``client`` must be issued
        after: the principal's last credential change and the client's last revocation
        (each read with the generation its write checks), and the subject and client
        revocations in the view."""
        times = [self._view.not_before(subject, client.claim_id)]
        for changed in (changed_at, client.changed_at):
            if changed is not None:
                times.append(changed.timestamp())
        return max((t for t in times if t is not None), default=None)

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
        not_after: int | None = None,
    ) -> tuple[str, int, str, float]:
        """The token, its ``exp``, its ``jti`` and its ``iat``. Every token carries
        ``client_id`` (RFC 9068), and ``sid`` only when a session stands behind it. ``iat``
        follows the subject's last credential change, the client's last revocation and any
        subject or client revocation this process knows of (``issued_at``); ``nbf`` and
        ``exp`` are whole seconds."""
        signer = self._keys.snapshot().signer
        if signer is None:
            raise Unavailable("no signing key is active")
        stamp = self._clock.timestamp()
        now = int(stamp)
        expires = now + int(client.access_token_ttl.total_seconds())
        if not_after is not None:
            # A token exchange never outlives the tokens it was exchanged for.
            expires = min(expires, not_after)
        iat = issued_at(stamp, self._not_before(subject, client, changed_at))
        claims: dict[str, Any] = {
            **extra,
            "iss": self._issuer,
            "sub": subject,
            "aud": audience[0] if len(audience) == 1 else list(audience),
            "exp": expires,
            "iat": iat,
            "nbf": now,
            "jti": random_urlsafe(16),
            "client_id": client.claim_id,
        }
        if session_id:
            claims["sid"] = session_id
        if scope:
            claims["scope"] = " ".join(scope)
        return sign(claims, signer), expires, claims["jti"], iat


def _generation(client: Client) -> int | None:
    """The generation a session of ``client`` is stored under (the built-in default
    client has no row, and no generation to check)."""
    return client.generation if client.id else None


def _not_before_iat(now: datetime, iat: float) -> datetime:
    """``now``, or the token's ``iat`` when that is later (a fraction after a revocation)."""
    return max(now, datetime.fromtimestamp(iat, UTC))
