"""The key-ring facet of the store contract: keys, updates, key-ring transactions."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from authority.domain.errors import AlreadyExists, NotFound
from authority.domain.keys import Algorithm, KeyUpdate, apply_update
from authority.store.base import Store

from .builders import T0, OpenStore, insert_keys, is_utc_aware, make_key, stored_key


async def test_keys_round_trip_exactly(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    scheduled = make_key(
        "k-1",
        algorithm=Algorithm.ES256,
        published_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        activates_at=datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=plus_two),
        retires_at=T0 + timedelta(days=30, microseconds=7),
    )
    plain = make_key("k-2", algorithm=Algorithm.RS256)
    await insert_keys(store, scheduled, plain)

    async with store.key_ring_transaction() as tx:
        seen_in_transaction = sorted(await tx.list_keys(), key=lambda k: k.kid)
    stored = sorted(await store.list_keys(), key=lambda k: k.kid)

    assert stored == [scheduled, plain]
    assert seen_in_transaction == stored
    for key in stored:
        assert isinstance(key.algorithm, Algorithm)
        for instant in (key.published_at, key.activates_at, key.retires_at, key.compromised_at):
            assert is_utc_aware(instant)


async def test_a_taken_kid_is_refused_and_the_transaction_rolls_back(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))

    with pytest.raises(AlreadyExists) as caught:
        await insert_keys(store, make_key("k-2"), make_key("k-1"))

    assert "k-1" in caught.value.message
    assert [k.kid for k in await store.list_keys()] == ["k-1"]


UPDATES = {
    "retire": KeyUpdate("k-1", retires_at=T0 + timedelta(days=30)),
    "move activation": KeyUpdate("k-1", activates_at=T0 + timedelta(minutes=5)),
    "nothing": KeyUpdate("k-1"),
    "compromise": KeyUpdate("k-1", compromised_at=T0 + timedelta(hours=2)),
}


@pytest.mark.parametrize("update", UPDATES.values(), ids=list(UPDATES))
async def test_update_key_applies_the_domain_semantics(store: Store, update: KeyUpdate) -> None:
    original = make_key("k-1", retires_at=T0 + timedelta(days=60))
    await insert_keys(store, original, make_key("k-2"))

    async with store.key_ring_transaction() as tx:
        await tx.update_key(update)

    expected = apply_update(original, update)
    if update.compromised_at is not None:
        expected = replace(expected, wrapped_private_key=b"")
    assert await stored_key(store, "k-1") == expected
    assert await stored_key(store, "k-2") == make_key("k-2")


async def test_clear_retires_at_cancels_a_retirement(store: Store) -> None:
    await insert_keys(store, make_key("k-1", retires_at=T0 + timedelta(days=30)))

    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", clear_retires_at=True))

    assert (await stored_key(store, "k-1")).retires_at is None


async def test_compromise_erases_private_material_for_good(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))
    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", compromised_at=T0))

    # A later schedule change must not bring anything back.
    async with store.key_ring_transaction() as tx:
        await tx.update_key(KeyUpdate("k-1", retires_at=T0 + timedelta(days=1)))

    key = await stored_key(store, "k-1")
    assert key.wrapped_private_key == b""
    assert key.compromised_at == T0
    assert key.public_jwk == make_key("k-1").public_jwk


async def test_updating_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        async with store.key_ring_transaction() as tx:
            await tx.update_key(KeyUpdate("k-404", retires_at=T0))


async def test_delete_keys_removes_only_those_named(store: Store) -> None:
    await insert_keys(store, make_key("k-1"), make_key("k-2"), make_key("k-3"))

    async with store.key_ring_transaction() as tx:
        await tx.delete_keys(("k-1", "k-3", "k-404"))
        await tx.delete_keys(())

    assert [k.kid for k in await store.list_keys()] == ["k-2"]


async def test_generation_grows_by_one_per_committed_transaction(store: Store) -> None:
    start = await store.key_ring_generation()

    await insert_keys(store, make_key("k-1"))
    async with store.key_ring_transaction():
        pass  # even an empty transaction tells pollers to look again

    assert await store.key_ring_generation() == start + 2


async def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    await insert_keys(store, make_key("k-1"))
    before = await store.key_ring_generation()

    async def change_everything_then_fail() -> None:
        async with store.key_ring_transaction() as tx:
            await tx.insert_key(make_key("k-2"))
            await tx.update_key(KeyUpdate("k-1", compromised_at=T0))
            await tx.delete_keys(("k-1",))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await change_everything_then_fail()

    assert await store.key_ring_generation() == before
    assert await store.list_keys() == [make_key("k-1")]


async def add_key_named_after_count(store: Store) -> None:
    async with store.key_ring_transaction() as tx:
        count = len(await tx.list_keys())
        await asyncio.sleep(0.05)  # give a concurrent transaction every chance to interleave
        await tx.insert_key(make_key(f"key-{count}"))


async def test_concurrent_transactions_of_one_store_serialise(store: Store) -> None:
    await asyncio.gather(*(add_key_named_after_count(store) for _ in range(3)))

    assert {k.kid for k in await store.list_keys()} == {"key-0", "key-1", "key-2"}
    assert await store.key_ring_generation() == 3


async def test_concurrent_transactions_of_two_stores_serialise(
    store: Store, open_store: OpenStore
) -> None:
    replica = await open_store()

    await asyncio.gather(add_key_named_after_count(store), add_key_named_after_count(replica))

    assert {k.kid for k in await replica.list_keys()} == {"key-0", "key-1"}
    assert await store.key_ring_generation() == 2
