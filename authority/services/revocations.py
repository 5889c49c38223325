"""Revocation: durable first, then the in-memory view Verify consults.

A revocation is in the store before ``revoke`` returns, and in this process's
view right after, so once the caller hears back, Verify here rejects. Entries
expire when every token they cover has expired, so the set stays bounded.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from authority.domain.clock import Clock
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.store.base import Store

log = structlog.get_logger(__name__)


class RevocationService:
    def __init__(
        self,
        *,
        store: Store,
        view: RevocationSet,
        clock: Clock,
        max_access_ttl: timedelta,
        leeway: timedelta,
        grace: timedelta,
        prune_interval: timedelta = timedelta(minutes=1),
    ) -> None:
        self._store = store
        self._view = view
        self._clock = clock
        self._horizon = (max_access_ttl + leeway).total_seconds()
        self._grace = grace
        self._prune_interval = prune_interval.total_seconds()

    @property
    def view(self) -> RevocationSet:
        return self._view

    async def load(self) -> int:
        """Fill the view from the store (at start)."""
        revocations = await self._store.list_revocations(self._clock.timestamp())
        for revocation in revocations:
            self._view.add(revocation)
        return len(revocations)

    async def revoke(
        self, kind: RevocationKind, value: str, *, expires_at: float | None = None
    ) -> datetime:
        """Reject every token of ``kind``=``value`` issued up to now. Idempotent."""
        now = self._clock.now()
        stamp = now.timestamp()
        revocation = Revocation(
            kind=kind,
            value=value,
            issued_before=stamp,
            expires_at=expires_at if expires_at is not None else stamp + self._horizon,
        )
        sessions = await self._store.record_revocation(revocation, at=now)
        self._view.add(revocation)
        log.info("revocation.recorded", kind=kind.value, sessions_revoked=sessions)
        return now

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
