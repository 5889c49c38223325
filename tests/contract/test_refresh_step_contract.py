"""``consume_refresh_with``: a whole refresh (read, decide, write) in as few trips as the
backend allows. Every test runs twice per backend: on the backend's own fast path
(SQLite: one function in aiosqlite's thread; PostgreSQL: two statements) and on the
reference path (``Sessions.consume_refresh_with``: a read, then ``consume_refresh``),
and must give the same answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from authority.domain.errors import AlreadyExists, Unauthenticated
from authority.domain.events import SESSION, Event, RequestContext, bind_request, new_event
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.base import RefreshState, RefreshStep, Rotation, Store, T
from authority.store.facets.sessions import Sessions

from .builders import (
    T0,
    OpenStore,
    digest,
    make_client,
    make_principal,
    make_refresh,
    start_session,
)

Path = Callable[[Store, bytes, RefreshStep[T]], Awaitable[T | None]]
AT = T0 + timedelta(minutes=1)


async def fast(store: Store, token_hash: bytes, step: RefreshStep[T]) -> T | None:
    return await store.consume_refresh_with(token_hash, step)


async def reference(store: Store, token_hash: bytes, step: RefreshStep[T]) -> T | None:
    assert isinstance(store, Sessions)
    return await Sessions.consume_refresh_with(store, token_hash, step)


@pytest.fixture(params=[fast, reference], ids=["fast", "reference"])
def path(request: pytest.FixtureRequest) -> Path[object]:
    chosen: Path[object] = request.param
    return chosen


def refreshed(successor: str) -> Event:
    return new_event("session.refreshed", SESSION, "s-1", at=AT, data={"n": successor})


def rotate(
    successor: str, *events: Event, seen: list[RefreshState | None] | None = None
) -> RefreshStep[str]:
    """A step that always asks to rotate (as a refresh that decided to), and notes what it
    was shown."""

    def step(state: RefreshState | None) -> tuple[str, Rotation | None]:
        if seen is not None:
            seen.append(state)
        record = make_refresh(successor, issued_at=AT)
        return successor, Rotation(AT, record, b"sealed:" + successor.encode(), events)

    return step


def look(seen: list[RefreshState | None]) -> RefreshStep[str]:
    """A step that writes nothing (a replay, a reuse), noting what it was shown."""

    def step(state: RefreshState | None) -> tuple[str, Rotation | None]:
        seen.append(state)
        return "looked", None

    return step


async def test_the_step_sees_token_session_successor_principal_and_client(
    store: Store, path: Path[object]
) -> None:
    await store.create_principal(make_principal())
    await store.create_client(make_client())
    session = await start_session(store)
    seen: list[RefreshState | None] = []

    assert await path(store, digest("s-1/rt-0"), rotate("rt-1", seen=seen)) == "rt-1"
    assert await path(store, digest("s-1/rt-0"), look(seen)) == "looked"
    assert await path(store, digest("unknown"), look(seen)) == "looked"

    first, second, unknown = seen
    assert first is not None and second is not None
    assert first.record == make_refresh("s-1/rt-0")
    assert first.session == session
    assert first.successor is None
    assert first.principal is not None and first.principal.id == "p-1"
    assert first.principal.generation == 0
    assert first.client == make_client()
    assert second.record.consumed_at == AT
    assert second.record.successor_hash == digest("rt-1")
    assert second.record.sealed_successor == b"sealed:rt-1"
    assert second.successor == make_refresh("rt-1", issued_at=AT)
    assert unknown is None


async def test_a_missing_principal_or_client_reads_as_none(
    store: Store, path: Path[object]
) -> None:
    await start_session(store)  # neither the principal p-1 nor the client "mobile" exists
    seen: list[RefreshState | None] = []

    assert await path(store, digest("s-1/rt-0"), look(seen)) == "looked"

    [state] = seen
    assert state is not None
    assert state.principal is None
    assert state.client is None


async def test_a_rotation_writes_the_successor_and_its_events_in_order(
    store: Store, path: Path[object]
) -> None:
    await start_session(store)
    events = (refreshed("a"), refreshed("b"))

    assert await path(store, digest("s-1/rt-0"), rotate("rt-1", *events)) == "rt-1"

    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None
    assert found[0].consumed_at == AT
    assert found[2] == make_refresh("rt-1", issued_at=AT)
    assert [e.event for e in await store.read_outbox()] == list(events)


async def test_events_made_in_the_step_carry_the_request(store: Store, path: Path[object]) -> None:
    """SQLite runs the step in its own thread: the request's context goes with it."""
    await start_session(store)
    bind_request(RequestContext(actor="alice", source_address="10.0.0.9", request_id="rq-7"))

    def step(state: RefreshState | None) -> tuple[str, Rotation | None]:
        event = refreshed("rt-1")
        return "done", Rotation(AT, make_refresh("rt-1", issued_at=AT), b"s", (event,))

    assert await path(store, digest("s-1/rt-0"), step) == "done"

    [entry] = await store.read_outbox()
    assert (entry.event.source_address, entry.event.request_id) == ("10.0.0.9", "rq-7")


async def test_a_step_that_raises_writes_nothing(store: Store, path: Path[object]) -> None:
    await start_session(store)

    def refuse(state: RefreshState | None) -> tuple[str, Rotation | None]:
        raise Unauthenticated("no")

    with pytest.raises(Unauthenticated):
        await path(store, digest("s-1/rt-0"), refuse)

    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None and found[0].consumed_at is None
    assert await store.read_outbox() == []
    # and the store still works afterwards (no transaction left open)
    assert await path(store, digest("s-1/rt-0"), rotate("rt-1")) == "rt-1"


async def test_a_taken_event_id_writes_nothing(store: Store, path: Path[object]) -> None:
    await start_session(store)
    taken = refreshed("first")
    await store.append_events((taken,))

    with pytest.raises(AlreadyExists):
        await path(store, digest("s-1/rt-0"), rotate("rt-1", taken))

    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None and found[0].consumed_at is None
    assert await store.find_refresh(digest("rt-1")) is None
    assert await path(store, digest("s-1/rt-0"), rotate("rt-1")) == "rt-1"


async def test_a_consumed_token_or_a_revoked_session_loses_and_writes_nothing(
    store: Store, path: Path[object]
) -> None:
    await start_session(store)
    await start_session(store, "s-2")
    assert await path(store, digest("s-1/rt-0"), rotate("rt-1")) == "rt-1"
    revocation = Revocation(RevocationKind.SESSION, "s-2", AT.timestamp(), AT.timestamp() + 60)
    assert await store.record_revocation(revocation, at=AT) == 1

    assert await path(store, digest("s-1/rt-0"), rotate("rt-again", refreshed("x"))) is None
    assert await path(store, digest("s-2/rt-0"), rotate("rt-2", refreshed("y"))) is None

    assert await store.find_refresh(digest("rt-again")) is None
    assert await store.find_refresh(digest("rt-2")) is None
    assert await store.read_outbox() == []


async def test_concurrent_refreshes_across_replicas_have_one_winner(
    store: Store, open_store: OpenStore, path: Path[object]
) -> None:
    await start_session(store)
    stores = [store, await open_store()]

    results = await asyncio.gather(
        *(
            path(stores[i % 2], digest("s-1/rt-0"), rotate(f"successor-{i}", refreshed(str(i))))
            for i in range(20)
        )
    )

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    found = await store.find_refresh(digest("s-1/rt-0"))
    assert found is not None and found[0].successor_hash == digest(str(winners[0]))
    assert len(await store.read_outbox()) == 1
