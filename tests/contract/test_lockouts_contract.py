"""The lockouts facet of the store contract (the attempt gates' durable ledger)."""

from __future__ import annotations

from datetime import UTC, datetime

from authority.store.base import Store

from .builders import OpenStore

NOW = 1_893_456_000.0  # epoch seconds, as the attempt gates pass them


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_lockouts_are_recorded_extended_never_shortened_and_pruned(
    store: Store, open_store: OpenStore
) -> None:
    key = "alice\x1f2001:db8::/64"
    assert await store.lockout_until(key, NOW) is None
    await store.record_lockout(key, NOW + 60.5)
    await store.record_lockout(key, NOW + 30.0)  # a shorter lock never shortens it
    replica = await open_store()  # every replica sees it
    assert await replica.lockout_until(key, NOW) == NOW + 60.5
    assert await replica.lockout_until("alice\x1f10.0.0.1", NOW) is None  # per source
    await store.record_lockout(key, NOW + 120.25)
    assert await store.lockout_until(key, NOW + 100) == NOW + 120.25
    assert await store.lockout_until(key, NOW + 120.25) is None  # ended
    await store.record_lockout("bob\x1f10.0.0.1", NOW + 500.0)
    await store.prune(_at(NOW + 200), sealed_before=_at(NOW))
    assert await store.lockout_until(key, NOW) is None  # pruned once ended
    assert await store.lockout_until("bob\x1f10.0.0.1", NOW + 200) == NOW + 500.0
