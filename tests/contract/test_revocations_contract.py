"""The revocations facet of the store contract: recording, widening, pruning."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from authority.domain.events import REVOCATION, Event, new_event
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.base import Store

from .builders import T0, US, OpenStore, consume, digest, epoch, start_session


async def test_a_revocation_is_widened_never_narrowed(store: Store) -> None:
    now = epoch(T0)

    async def record(before: float, expires: float) -> list[Revocation]:
        revocation = Revocation(RevocationKind.SUBJECT, "p-1", before, expires)
        await store.record_revocation(revocation, at=T0)
        return await store.list_revocations(now)

    wide = Revocation(RevocationKind.SUBJECT, "p-1", now + 100, now + 200)
    assert await record(now + 100, now + 200) == [wide]
    assert await record(now + 50, now + 150) == [wide]  # narrower: no change
    assert await record(now + 150, now + 180) == [replace(wide, issued_before=now + 150)]
    assert await record(now + 120, now + 300) == [
        Revocation(RevocationKind.SUBJECT, "p-1", now + 150, now + 300)
    ]


async def test_revocation_times_keep_microseconds(store: Store) -> None:
    revocation = Revocation(RevocationKind.TOKEN, "jti-1", 1740830400.123456, 1740834000.654321)

    await store.record_revocation(revocation, at=T0)

    assert await store.list_revocations(1740830400.0) == [revocation]


async def test_revocations_revoke_the_sessions_they_cover(store: Store) -> None:
    for session_id, subject, client_id in [
        ("s-1", "alice", "c-1"),
        ("s-2", "alice", "c-2"),
        ("s-3", "bob", "c-1"),
        ("s-4", "bob", "c-2"),
        ("s-5", "carol", "c-3"),
    ]:
        await start_session(store, session_id, subject=subject, client_id=client_id)
    now = epoch(T0)

    async def revoke(kind: RevocationKind, value: str, seconds: int) -> int | None:
        revocation = Revocation(kind, value, now + seconds, now + 3600)
        return await store.record_revocation(revocation, at=T0 + timedelta(seconds=seconds))

    assert await revoke(RevocationKind.TOKEN, "s-5", 1) == 0  # a jti touches no session
    assert await revoke(RevocationKind.SESSION, "s-1", 2) == 1
    assert await revoke(RevocationKind.SUBJECT, "alice", 3) == 1  # s-1 was already revoked
    assert await revoke(RevocationKind.CLIENT, "c-1", 4) == 1  # s-1 again, and s-3
    assert await revoke(RevocationKind.SUBJECT, "alice", 5) == 0
    assert await revoke(RevocationKind.SESSION, "s-404", 6) == 0

    async def revoked_at(session_id: str) -> datetime | None:
        found = await store.find_refresh(digest(f"{session_id}/rt-0"))
        assert found is not None
        return found[1].revoked_at

    assert await revoked_at("s-1") == T0 + timedelta(seconds=2)  # set once, never moved
    assert await revoked_at("s-2") == T0 + timedelta(seconds=3)
    assert await revoked_at("s-3") == T0 + timedelta(seconds=4)
    assert await revoked_at("s-4") is None
    assert await revoked_at("s-5") is None
    assert {(r.kind, r.value) for r in await store.list_revocations(now)} == {
        (RevocationKind.TOKEN, "s-5"),
        (RevocationKind.SESSION, "s-1"),
        (RevocationKind.SUBJECT, "alice"),
        (RevocationKind.CLIENT, "c-1"),
        (RevocationKind.SESSION, "s-404"),
    }


async def test_list_revocations_excludes_expired_ones(store: Store) -> None:
    now = epoch(T0)
    live = Revocation(RevocationKind.TOKEN, "live", now - 10, now + 0.000001)
    for revocation in (
        live,
        Revocation(RevocationKind.TOKEN, "expires-now", now - 10, now),
        Revocation(RevocationKind.TOKEN, "expired", now - 10, now - 1),
    ):
        await store.record_revocation(revocation, at=T0)

    assert await store.list_revocations(now) == [live]
    assert await store.list_revocations(now + 1) == []


async def test_revocations_since_returns_what_was_recorded_or_widened_since(
    store: Store,
) -> None:
    now = epoch(T0)
    first = Revocation(RevocationKind.TOKEN, "first", now, now + 3600)
    second = Revocation(RevocationKind.SUBJECT, "second", now, now + 3600)
    short = Revocation(RevocationKind.TOKEN, "short", now, now + 15)
    await store.record_revocation(first, at=T0)
    await store.record_revocation(second, at=T0 + timedelta(seconds=10))
    await store.record_revocation(short, at=T0 + timedelta(seconds=10))

    def names(revocations: list[Revocation]) -> set[str]:
        return {r.value for r in revocations}

    assert names(await store.revocations_since(T0 + timedelta(seconds=10), now)) == {
        "second",
        "short",
    }  # recorded exactly at `since`: included
    assert names(await store.revocations_since(T0 + timedelta(seconds=10) + US, now)) == set()
    assert names(await store.revocations_since(T0 - timedelta(minutes=1), now)) == {
        "first",
        "second",
        "short",
    }  # overlapping windows see revocations again, which is harmless
    assert names(await store.revocations_since(T0, now + 20)) == {"first", "second"}  # expired

    widened = replace(second, issued_before=now + 30)
    await store.record_revocation(widened, at=T0 + timedelta(seconds=30))
    assert await store.revocations_since(T0 + timedelta(seconds=20), now) == [widened]


def revocation_event(value: str) -> Event:
    return new_event("revocation.session", REVOCATION, value, at=T0)


@pytest.mark.parametrize("kind", [RevocationKind.TOKEN, RevocationKind.SESSION])
async def test_a_repeated_jti_or_sid_revocation_writes_nothing(
    store: Store, kind: RevocationKind
) -> None:
    await start_session(store)
    now = epoch(T0)
    first = Revocation(kind, "s-1", now, now + 600)
    assert await store.record_revocation(first, at=T0, events=(revocation_event("s-1"),)) == (
        1 if kind is RevocationKind.SESSION else 0
    )
    outbox = await store.read_outbox()

    for seconds in (1, 30, 3600):  # later and wider: still the same target, already revoked
        later = Revocation(kind, "s-1", now + seconds, now + 600 + seconds)
        at = T0 + timedelta(seconds=seconds)
        assert (
            await store.record_revocation(later, at=at, events=(revocation_event("s-1"),)) is None
        )

    assert await store.list_revocations(now) == [first]
    assert await store.revocations_since(T0 + US, now) == []
    assert await store.read_outbox() == outbox


async def test_a_subject_revocation_that_changes_nothing_writes_nothing(store: Store) -> None:
    now = epoch(T0)
    wide = Revocation(RevocationKind.SUBJECT, "p-1", now + 100, now + 200)
    assert await store.record_revocation(wide, at=T0, events=(revocation_event("p-1"),)) == 0
    outbox = await store.read_outbox()

    for narrower in (wide, replace(wide, issued_before=now + 50, expires_at=now + 150)):
        assert (
            await store.record_revocation(narrower, at=T0, events=(revocation_event("p-1"),))
            is None
        )
    assert await store.read_outbox() == outbox

    widened = replace(wide, issued_before=now + 150)
    assert await store.record_revocation(widened, at=T0, events=(revocation_event("p-1"),)) == 0
    assert len(await store.read_outbox()) == len(outbox) + 1


async def test_concurrent_identical_revocations_write_once(
    store: Store, open_store: OpenStore
) -> None:
    replica = await open_store()
    await start_session(store)
    now = epoch(T0)

    results = await asyncio.gather(
        *(
            (store, replica)[i % 2].record_revocation(
                Revocation(RevocationKind.SESSION, "s-1", now + i, now + 600 + i),
                at=T0 + timedelta(microseconds=i),
                events=(revocation_event("s-1"),),
            )
            for i in range(20)
        )
    )

    assert [r for r in results if r is not None] == [1]
    assert len(await store.read_outbox()) == 1
    assert len(await store.list_revocations(now)) == 1


async def test_prune_deletes_what_expired_and_wipes_old_sealed_successors(store: Store) -> None:
    now = T0 + timedelta(days=1)
    cutoff = now - timedelta(seconds=10)
    await start_session(store, "expired", absolute_expires_at=now)
    await start_session(store, "live", absolute_expires_at=now + US)
    assert await consume(store, "expired/rt-0", "expired/rt-1", T0, session_id="expired")
    assert await consume(store, "live/rt-0", "live/rt-1", cutoff - US, session_id="live")
    assert await consume(store, "live/rt-1", "live/rt-2", cutoff, session_id="live")
    t = epoch(now)
    for name, expires in (("gone", t - 1), ("at-now", t), ("kept", t + 1)):
        await store.record_revocation(Revocation(RevocationKind.TOKEN, name, t - 5, expires), at=T0)

    deleted = await store.prune(now, sealed_before=cutoff)

    assert deleted == 3  # two revocations and one session
    assert [r.value for r in await store.list_revocations(t - 10)] == ["kept"]
    for name in ("expired/rt-0", "expired/rt-1"):  # the session's tokens went with it
        assert await store.find_refresh(digest(name)) is None
    before_cutoff = await store.find_refresh(digest("live/rt-0"))
    at_cutoff = await store.find_refresh(digest("live/rt-1"))
    assert before_cutoff is not None
    assert at_cutoff is not None
    assert before_cutoff[0].sealed_successor is None
    assert before_cutoff[0].successor_hash == digest("live/rt-1")  # only the sealed pair goes
    assert at_cutoff[0].sealed_successor == b"sealed:live/rt-2"
    assert await store.prune(now, sealed_before=cutoff) == 0
