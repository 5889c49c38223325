"""The key manager over a real SQLite store, with a manual clock: persistence, timing,
and two managers (two replicas) sharing one store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from authority.crypto import EnvelopeError, Kek, KekRing
from authority.domain.clock import ManualClock
from authority.domain.keys import Algorithm, KeyPolicy, KeyState
from authority.keys.manager import KeyManager
from authority.store.sqlite import SqliteStore

POLICY = KeyPolicy(
    rotation_period=timedelta(days=14),
    prepublish=timedelta(hours=1),
    max_token_ttl=timedelta(minutes=10),
    leeway=timedelta(seconds=30),
)
KEK = KekRing(Kek.from_secret(b"k" * 32))


def manager(store: SqliteStore, clock: ManualClock, kek: KekRing = KEK) -> KeyManager:
    return KeyManager(
        store=store,
        kek=kek,
        policy=POLICY,
        clock=clock,
        jwks_max_age=timedelta(minutes=10),
        check_interval=timedelta(milliseconds=50),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "authority.db")
    await store.open()
    yield store
    await store.close()


async def test_first_start_creates_one_signing_key_and_a_restart_reuses_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = ManualClock()
    first = manager(store, clock)
    await first.start()
    snapshot = first.snapshot()
    assert snapshot.signer is not None
    assert list(snapshot.verification_keys) == [snapshot.signer.kid]
    second_store = SqliteStore(tmp_path / "authority.db")
    await second_store.open()
    try:
        second = manager(second_store, clock)
        await second.start()
        again = second.snapshot()
        assert again.signer is not None
        assert again.signer.kid == snapshot.signer.kid
        assert again.jwks.document == snapshot.jwks.document
    finally:
        await second_store.close()


async def test_the_signer_switches_at_activation_without_any_io(store: SqliteStore) -> None:
    clock = ManualClock()
    keys = manager(store, clock)
    await keys.start()
    old = keys.snapshot().signer
    result = await keys.rotate()
    assert result.next_key is not None and old is not None
    assert keys.snapshot().signer.kid == old.kid  # type: ignore[union-attr]
    assert set(keys.snapshot().verification_keys) == {old.kid, result.next_key.kid}
    await store.close()  # nothing below may touch storage
    clock.advance(POLICY.prepublish)
    assert keys.snapshot().signer.kid == result.next_key.kid  # type: ignore[union-attr]
    clock.advance(POLICY.max_token_ttl + POLICY.leeway)
    assert set(keys.snapshot().verification_keys) == {result.next_key.kid}


async def test_the_loop_performs_a_scheduled_rotation(store: SqliteStore) -> None:
    clock = ManualClock()
    keys = manager(store, clock)
    await keys.start()
    task = asyncio.create_task(keys.run())
    try:
        clock.advance(POLICY.rotation_period - POLICY.prepublish)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len(keys.snapshot().verification_keys) == 2:
                break
        states = sorted(POLICY.state(r, clock.now()) for r in keys.snapshot().records)
        assert states == sorted([KeyState.ACTIVE, KeyState.PENDING])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_two_replicas_racing_to_rotate_create_exactly_one_key(tmp_path: Path) -> None:
    clock = ManualClock()
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        replicas = [manager(s, clock) for s in stores]
        await asyncio.gather(*(r.start() for r in replicas))
        assert len(await stores[0].list_keys()) == 1  # one bootstrap key, not two
        results = await asyncio.gather(*(r.rotate() for r in replicas))
        assert len(await stores[0].list_keys()) == 2
        assert results[0].next_key is not None and results[1].next_key is not None
        assert results[0].next_key.kid == results[1].next_key.kid
        for replica in replicas:
            await replica.reload()
        documents = {r.snapshot().jwks.document for r in replicas}
        assert len(documents) == 1
    finally:
        for s in stores:
            await s.close()


async def test_compromise_erases_private_material_and_promotes_the_pending_key(
    store: SqliteStore,
) -> None:
    clock = ManualClock()
    keys = manager(store, clock)
    await keys.start()
    old = keys.snapshot().signer
    pending = (await keys.rotate(Algorithm.ES256)).next_key
    assert old is not None and pending is not None
    result = await keys.compromise(old.kid)
    assert result.next_key is not None and result.next_key.kid == pending.kid
    snapshot = keys.snapshot()
    assert snapshot.signer is not None and snapshot.signer.kid == pending.kid
    assert snapshot.signer.algorithm is Algorithm.ES256
    assert old.kid not in snapshot.verification_keys
    stored = {r.kid: r for r in await store.list_keys()}
    assert stored[old.kid].wrapped_private_key == b""


async def test_private_keys_cannot_be_loaded_under_another_kek(store: SqliteStore) -> None:
    clock = ManualClock()
    await manager(store, clock).start()
    other = manager(store, clock, kek=KekRing(Kek.from_secret(b"o" * 32)))
    with pytest.raises(EnvelopeError, match="KEK"):
        await other.start()
