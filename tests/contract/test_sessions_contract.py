"""The sessions facet of the store contract: sessions and refresh tokens."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from authority.domain.errors import AlreadyExists, InvalidArgument
from authority.domain.revocation import Revocation, RevocationKind
from authority.domain.sessions import RefreshRecord
from authority.store.base import Store

from .builders import (
    T0,
    OpenStore,
    consume,
    digest,
    epoch,
    is_utc_aware,
    make_refresh,
    make_session,
    start_session,
)


async def test_a_session_and_its_first_token_round_trip_exactly(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    session = replace(
        make_session(),
        created_at=datetime(2025, 3, 1, 14, 0, 0, 7, tzinfo=plus_two),
        absolute_expires_at=T0 + timedelta(days=30, microseconds=1),
    )
    first = RefreshRecord(
        token_hash=digest("rt-0"),
        session_id="s-1",
        issued_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        expires_at=T0 + timedelta(hours=8, microseconds=9),
    )
    await store.create_session(session, first)

    found = await store.find_refresh(digest("rt-0"))

    assert found == (first, session, None)
    assert found is not None
    record, stored, _ = found
    assert isinstance(record.token_hash, bytes)
    for instant in (
        record.issued_at,
        record.expires_at,
        stored.created_at,
        stored.absolute_expires_at,
    ):
        assert is_utc_aware(instant)
    assert await store.find_refresh(digest("unknown")) is None


async def test_a_taken_session_id_stores_nothing(store: Store) -> None:
    await start_session(store, "s-1")

    with pytest.raises(AlreadyExists) as caught:
        await store.create_session(make_session("s-1", subject="p-2"), make_refresh("other"))

    assert "s-1" in caught.value.message
    assert await store.find_refresh(digest("other")) is None
    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None
    assert found[1].subject == "p-1"


async def test_a_taken_token_hash_rolls_the_new_session_back(store: Store) -> None:
    await start_session(store, "s-1")

    with pytest.raises(AlreadyExists):
        await store.create_session(make_session("s-2"), make_refresh("s-1/rt-0", "s-2"))

    assert (
        await store.record_revocation(
            Revocation(RevocationKind.SESSION, "s-2", epoch(T0), epoch(T0) + 60), at=T0
        )
        == 0
    )  # no session s-2 was stored


async def test_naive_instants_are_refused(store: Store) -> None:
    naive = datetime(2025, 3, 1, 12, 0)

    with pytest.raises(InvalidArgument):
        await store.create_session(replace(make_session(), created_at=naive), make_refresh("r"))

    assert await store.find_refresh(digest("r")) is None


async def test_consume_marks_the_token_and_stores_its_successor(store: Store) -> None:
    session = await start_session(store)
    at = T0 + timedelta(minutes=5, microseconds=11)

    assert await consume(store, "s-1/rt-0", "rt-1", at) is True

    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None
    record, stored_session, successor = found
    assert record == replace(
        make_refresh("s-1/rt-0"),
        consumed_at=at,
        successor_hash=digest("rt-1"),
        sealed_successor=b"sealed:rt-1",
    )
    assert stored_session == session
    assert successor == make_refresh("rt-1", issued_at=at)
    assert await store.find_refresh(digest("rt-1")) == (successor, session, None)


async def test_a_second_consume_loses_and_changes_nothing(store: Store) -> None:
    await start_session(store)
    assert await consume(store, "s-1/rt-0", "rt-1", T0 + timedelta(minutes=1)) is True
    before = await store.find_refresh(digest("s-1/rt-0"))

    assert await consume(store, "s-1/rt-0", "rt-1b", T0 + timedelta(minutes=2)) is False

    assert await store.find_refresh(digest("s-1/rt-0")) == before
    assert await store.find_refresh(digest("rt-1b")) is None
    assert await consume(store, "unknown", "rt-x", T0) is False
    assert await store.find_refresh(digest("rt-x")) is None


async def test_consume_fails_once_the_session_is_revoked(store: Store) -> None:
    await start_session(store)
    revocation = Revocation(RevocationKind.SESSION, "s-1", epoch(T0), epoch(T0) + 3600)
    assert await store.record_revocation(revocation, at=T0 + timedelta(seconds=1)) == 1

    assert await consume(store, "s-1/rt-0", "rt-1", T0 + timedelta(seconds=2)) is False

    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None
    assert found[0].consumed_at is None
    assert found[1].revoked_at == T0 + timedelta(seconds=1)
    assert await store.find_refresh(digest("rt-1")) is None


async def race(stores: list[Store], contenders: int) -> list[bool]:
    """``contenders`` concurrent refreshes of one token, spread over ``stores``."""
    at = T0 + timedelta(minutes=1)
    return await asyncio.gather(
        *(
            consume(stores[i % len(stores)], "s-1/rt-0", f"successor-{i}", at)
            for i in range(contenders)
        )
    )


async def assert_one_winner(store: Store, results: list[bool]) -> None:
    assert results.count(True) == 1
    winner = results.index(True)
    stored = [await store.find_refresh(digest(f"successor-{i}")) for i in range(len(results))]
    assert [i for i, found in enumerate(stored) if found is not None] == [winner]
    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None
    assert found[0].successor_hash == digest(f"successor-{winner}")
    assert found[2] is not None


async def test_concurrent_consumes_of_one_store_have_one_winner(store: Store) -> None:
    await start_session(store)

    results = await race([store], 20)

    await assert_one_winner(store, results)


async def test_concurrent_consumes_of_two_replicas_have_one_winner(
    store: Store, open_store: OpenStore
) -> None:
    replica = await open_store()
    await start_session(store)

    results = await race([store, replica], 20)

    await assert_one_winner(replica, results)
