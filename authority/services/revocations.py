"""Revocation: durable first, then the in-memory view Verify consults, then everyone else.

A revocation is in the store before ``revoke`` returns, and in this process's
view right after, so once the caller hears back, Verify here rejects. Other
processes learn it from the fan-out within milliseconds and, should the fan-out
be down, from polling the store (``revocations_since``), so nothing acknowledged
is ever lost. Entries expire when every token they cover has expired, so the set
stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from authority.domain.clock import Clock
from authority.domain.errors import Unavailable
from authority.domain.events import REVOCATION, Event, new_event
from authority.domain.histogram import Histogram
from authority.domain.principals import Principal
from authority.domain.revocation import (
    Revocation,
    RevocationKind,
    RevocationSet,
    whole_revocation,
)
from authority.ports.fanout import Fanout, LocalFanout
from authority.services.revocation_feed import RevocationFeed
from authority.store.base import (
    ClientChange,
    ClientStore,
    CredentialChange,
    CredentialStore,
    RevocationStore,
)

# How far back each poll looks before the previous one: longer than any transaction.
POLL_OVERLAP = timedelta(seconds=5)


log = structlog.get_logger(__name__)

# Event type suffixes: readable names rather than the claim names the kinds are keyed by.
_EVENT_KIND = {
    RevocationKind.TOKEN: "token",
    RevocationKind.SESSION: "session",
    RevocationKind.SUBJECT: "subject",
    RevocationKind.CLIENT: "client",
}


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A credential change as applied: when, and what the store did."""

    at: datetime
    change: CredentialChange

    @property
    def principal(self) -> Principal | None:
        return self.change.principal


class RevocationsStore(RevocationStore, CredentialStore, ClientStore, Protocol):
    """The facets of the store that revocations, credential and client changes use."""


class RevocationService:
    def __init__(
        self,
        *,
        store: RevocationsStore,
        view: RevocationSet,
        clock: Clock,
        max_access_ttl: timedelta,
        leeway: timedelta,
        grace: timedelta,
        fanout: Fanout | None = None,
        poll_interval: timedelta = timedelta(seconds=1),
        prune_interval: timedelta = timedelta(minutes=1),
        feed: RevocationFeed | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._fanout: Fanout = fanout or LocalFanout()
        self._poll_interval = poll_interval.total_seconds()
        self._polled_until: datetime | None = None
        self.lag = Histogram()
        self._view = view
        self._clock = clock
        self._horizon = (max_access_ttl + leeway).total_seconds()
        self._grace = grace
        self._prune_interval = prune_interval.total_seconds()

    @property
    def view(self) -> RevocationSet:
        return self._view

    @property
    def horizon(self) -> float:
        """Seconds after its issue that an access token is surely dead (TTL plus leeway)."""
        return self._horizon

    @property
    def fanout_healthy(self) -> bool:
        return self._fanout.healthy

    def _add(self, revocation: Revocation) -> bool:
        """The one way into the view: whatever changes it also goes to the followers (the
        merged entry, so a follower that merges the same way ends up with the same view)."""
        if not self._view.add(revocation):
            return False
        if self._feed is not None:
            merged = self._view.get(revocation.kind, revocation.value)
            self._feed.publish(merged or revocation)
        return True

    async def load(self) -> int:
        """Fill the view from the store (at start)."""
        started = self._clock.now()
        revocations = await self._store.list_revocations(started.timestamp())
        for revocation in revocations:
            self._add(revocation)
        self._polled_until = started
        return len(revocations)

    async def revoke(
        self,
        kind: RevocationKind,
        value: str,
        *,
        expires_at: float | None = None,
        events: Sequence[Event] = (),
        reason: str = "",
    ) -> datetime:
        """Reject every token of ``kind``=``value`` issued up to now. Idempotent.

        Writes a ``revocation.<kind>`` event (with ``reason``, when given), and ``events``
        (what led to it, such as a detected refresh-token reuse), in the same transaction
        as the revocation. A repeat that changes nothing (RFC 7009: revoking a revoked
        token succeeds) writes, publishes and logs nothing. A subject revocation is a
        credential change of the principal (``change_credentials``)."""
        if kind is RevocationKind.SUBJECT:
            change = await self.change_credentials(value, revoke=True, events=events, reason=reason)
            return change.at
        now = self._clock.now()
        if kind is RevocationKind.CLIENT:
            await self.change_client(value, revoke=True, events=events, reason=reason)
            return now
        stamp = now.timestamp()
        expires = expires_at if expires_at is not None else stamp + self._horizon
        if kind in (RevocationKind.TOKEN, RevocationKind.SESSION):
            # Every token carrying the jti or sid: no iat comparison, no clock to skew.
            revocation = whole_revocation(kind, value, expires)
        else:  # a client: a not-before time
            revocation = Revocation(kind, value, stamp, expires)
        event = new_event(
            f"revocation.{_EVENT_KIND.get(kind, kind.value)}",
            REVOCATION,
            value,
            at=now,
            data={"kind": kind.value, "value": value, "expires_at": revocation.expires_at}
            | ({"reason": reason} if reason else {}),
        )
        sessions = await self._store.record_revocation(revocation, at=now, events=(*events, event))
        if sessions is None:  # already revoked at least as widely: nothing to tell anyone
            if self._view.get(kind, value) is None:
                # Recorded by another process and not here yet: Verify here must reject
                # from now on, as for any acknowledged revocation.
                self._add(revocation)
            return now
        self._add(revocation)
        log.info("revocation.recorded", kind=kind.value, sessions_revoked=sessions)
        try:
            await self._fanout.publish_revocation(revocation)
        except Unavailable:
            # Durable already: other processes will find it when they poll the store.
            log.warning("revocation.fanout_unavailable", kind=kind.value)
        return now

    async def change_credentials(
        self,
        principal_id: str,
        *,
        revoke: bool,
        password_hash: str | None = None,
        disabled: bool | None = None,
        delete: bool = False,
        events: Sequence[Event] = (),
        reason: str = "",
    ) -> AppliedChange:
        """A credential change of ``principal_id`` and, with ``revoke``, the end of every
        session and token of the subject, in one store transaction (see
        ``CredentialStore.change_credentials`` for how it is ordered with logins); then the
        view here, then the followers. When this returns, Verify here rejects every token the
        principal held, and no login that checked the old credential can start a session."""
        now = self._clock.now()
        stamp = now.timestamp()
        revocation = None
        if revoke:
            revocation = Revocation(
                RevocationKind.SUBJECT, principal_id, stamp, stamp + self._horizon
            )
            events = (
                *events,
                new_event(
                    "revocation.subject",
                    REVOCATION,
                    principal_id,
                    at=now,
                    data={
                        "kind": RevocationKind.SUBJECT.value,
                        "value": principal_id,
                        "expires_at": revocation.expires_at,
                    }
                    | ({"reason": reason} if reason else {}),
                ),
            )
        change = await self._store.change_credentials(
            principal_id,
            at=now,
            password_hash=password_hash,
            disabled=disabled,
            delete=delete,
            revocation=revocation,
            events=events,
        )
        for recorded in change.revocations:
            self._add(recorded)
        if revocation is not None:
            log.info(
                "revocation.recorded",
                kind=RevocationKind.SUBJECT.value,
                sessions_revoked=len(change.revocations) - 1,
            )
        for recorded in change.revocations:
            try:
                await self._fanout.publish_revocation(recorded)
            except Unavailable:
                # Durable already: other processes will find it when they poll the store.
                log.warning("revocation.fanout_unavailable", kind=recorded.kind.value)
                break
        return AppliedChange(now, change)

    async def change_client(
        self,
        client_id: str,
        *,
        revoke: bool,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        delete: bool = False,
        events: Sequence[Event] = (),
        reason: str = "",
    ) -> ClientChange:
        """A change of ``client_id`` and, with ``revoke``, the end of every session and
        token of the client, in one store transaction (``ClientStore.change_client``: its
        generation grows, so no call that authenticated the client before commits a token
        after); then the view here, then the followers. The not-before recorded is now, or
        later if a token committed for the client carries a later ``iat`` (a replica whose
        clock runs ahead minted it)."""
        now = self._clock.now()

        def revocation_events(revocation: Revocation) -> tuple[Event, ...]:
            data = {
                "kind": RevocationKind.CLIENT.value,
                "value": client_id,
                "expires_at": revocation.expires_at,
            }
            return (
                new_event(
                    "revocation.client",
                    REVOCATION,
                    client_id,
                    at=now,
                    data=data | ({"reason": reason} if reason else {}),
                ),
            )

        change = await self._store.change_client(
            client_id,
            at=now,
            secret_hash=secret_hash,
            disabled=disabled,
            allowed_claims=allowed_claims,
            sensitive_claims=sensitive_claims,
            delete=delete,
            revoke_for=timedelta(seconds=self._horizon) if revoke else None,
            events=events,
            revocation_events=revocation_events,
        )
        if change.revocation is not None:
            self._add(change.revocation)
            log.info("revocation.recorded", kind=RevocationKind.CLIENT.value)
            try:
                await self._fanout.publish_revocation(change.revocation)
            except Unavailable:
                # Durable already: other processes will find it when they poll the store.
                log.warning("revocation.fanout_unavailable", kind=RevocationKind.CLIENT.value)
        return change

    def received(self, revocation: Revocation) -> None:
        """A revocation from another process, by the fan-out."""
        self._add(revocation)
        self.lag.observe(max(0.0, self._clock.timestamp() - revocation.issued_before))

    async def resync(self) -> None:
        """After (re)connecting to the fan-out: take what we may have missed, and put back
        into the shared cache what it lost (a Redis restart empties it)."""
        cached = await self._fanout.live_revocations()
        for revocation in cached:
            self._add(revocation)
        await self.poll()
        present = {(r.kind, r.value) for r in cached}
        durable = await self._store.list_revocations(self._clock.timestamp())
        for revocation in durable:
            if (revocation.kind, revocation.value) not in present:
                await self._fanout.publish_revocation(revocation)

    async def poll(self) -> int:
        """Read revocations recorded since the last poll, with an overlap for writers whose
        transactions committed out of order (adding one twice is harmless)."""
        now = self._clock.now()
        since = (self._polled_until or now) - POLL_OVERLAP
        found = await self._store.revocations_since(since, now.timestamp())
        for revocation in found:
            self._add(revocation)
        self._polled_until = now
        return len(found)

    async def run_poll(self) -> None:
        """The safety net: poll the store every ``poll_interval`` while the fan-out is down
        (or absent); while it carries everything, every five intervals only, but at once
        when it drops: what was published while it was failing may be lost, and from
        then on the poll interval alone bounds how late another process's revocation
        arrives here."""
        while True:
            if self._fanout.healthy and not isinstance(self._fanout, LocalFanout):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval * 5):
                        await self._fanout.dropped()
            else:
                await asyncio.sleep(self._poll_interval)
            try:
                await self.poll()
            except Unavailable:
                log.warning("revocation.poll_failed")

    async def run(self) -> None:
        """Expire the view and prune the store, periodically, until cancelled."""
        while True:
            await asyncio.sleep(self._prune_interval)
            now = self._clock.now()
            self._view.expire(now.timestamp())
            try:
                await self._store.prune(now, sealed_before=now - self._grace)
            except Exception:
                log.exception("revocation.prune_failed")
