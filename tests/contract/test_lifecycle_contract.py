"""The Store contract for the token lifecycle: principals' and clients' changes, refresh
sessions, revocations and pruning, as a caller would notice them, on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from authority.domain.clients import Client, GrantType
from authority.domain.errors import AlreadyExists, InvalidArgument, Unavailable
from authority.domain.events import REVOCATION, Event, new_event
from authority.domain.principals import Principal
from authority.domain.revocation import Revocation, RevocationKind
from authority.domain.sessions import RefreshRecord, Session
from authority.store.base import Store
from authority.store.factory import make_store
from authority.store.postgres import PostgresStore
from authority.store.sqlite import SqliteStore

from .conftest import Backend, fresh_schema

OpenStore = Callable[[], Awaitable[Store]]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
US = timedelta(microseconds=1)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
OTHER_HASH = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0$b3RoZXJoYXNo"
SECRET_HASH = hashlib.sha256(b"client secret").digest()


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def epoch(instant: datetime) -> float:
    return instant.timestamp()


def make_principal(name: str = "alice", principal_id: str = "p-1") -> Principal:
    return Principal(id=principal_id, name=name, password_hash=HASH, disabled=False, created_at=T0)


def make_client(client_id: str = "mobile", **changes: object) -> Client:
    client = Client(
        id=client_id,
        secret_hash=SECRET_HASH,
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        audiences=("api", "billing", "a-first"),
        scopes=frozenset({"read", "write", "admin"}),
        default_scopes=("write", "read"),
        access_token_ttl=timedelta(minutes=5, microseconds=3),
        session_idle_ttl=timedelta(days=1),
        session_absolute_ttl=timedelta(days=30, seconds=1),
        disabled=False,
        created_at=T0,
    )
    return replace(client, **changes)  # type: ignore[arg-type]


def make_session(
    session_id: str = "s-1",
    *,
    subject: str = "p-1",
    client_id: str = "mobile",
    absolute_expires_at: datetime = T0 + timedelta(days=30),
) -> Session:
    return Session(
        id=session_id,
        subject=subject,
        client_id=client_id,
        audience=("api", "billing"),
        scope=("write", "read"),
        created_at=T0,
        idle_ttl=timedelta(hours=8, microseconds=1),
        absolute_expires_at=absolute_expires_at,
    )


def make_refresh(name: str, session_id: str = "s-1", issued_at: datetime = T0) -> RefreshRecord:
    return RefreshRecord(
        token_hash=digest(name),
        session_id=session_id,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(hours=8),
    )


async def start_session(store: Store, session_id: str = "s-1", **changes: object) -> Session:
    session = make_session(session_id, **changes)  # type: ignore[arg-type]
    await store.create_session(session, make_refresh(f"{session_id}/rt-0", session_id))
    return session


async def consume(
    store: Store, name: str, successor: str, at: datetime, session_id: str = "s-1"
) -> bool:
    return await store.consume_refresh(
        digest(name),
        consumed_at=at,
        successor=make_refresh(successor, session_id, issued_at=at),
        sealed=b"sealed:" + successor.encode(),
    )


def is_utc_aware(instant: datetime | None) -> bool:
    return instant is None or instant.utcoffset() == timedelta(0)


# -- principals -------------------------------------------------------------------


async def test_update_principal_changes_only_the_given_fields(store: Store) -> None:
    await store.create_principal(make_principal())

    unchanged = await store.update_principal("p-1")
    rehashed = await store.update_principal("p-1", password_hash=OTHER_HASH)
    disabled = await store.update_principal("p-1", disabled=True)
    both = await store.update_principal("p-1", password_hash=HASH, disabled=False)

    # Each change of the password or of ``disabled`` is a credential change: the
    # generation grows (test_credential_contract says what it orders).
    assert unchanged == make_principal()
    assert rehashed == replace(make_principal(), password_hash=OTHER_HASH, generation=1)
    assert disabled == replace(
        make_principal(), password_hash=OTHER_HASH, disabled=True, generation=2
    )
    assert both == replace(make_principal(), generation=3)
    assert await store.get_principal("p-1") == replace(make_principal(), generation=3)
    assert await store.update_principal("p-404", disabled=True) is None
    assert await store.get_principal("p-404") is None


async def test_delete_principal_frees_the_name(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))
    await store.create_principal(make_principal("bob", "p-2"))

    assert await store.delete_principal("p-1") is True
    assert await store.delete_principal("p-1") is False
    assert await store.delete_principal("p-404") is False

    assert await store.get_principal("p-1") is None
    assert await store.get_principal_by_name("alice") is None
    assert await store.get_principal("p-2") == make_principal("bob", "p-2")
    await store.create_principal(make_principal("alice", "p-3"))  # the name is free again


# -- clients ----------------------------------------------------------------------


async def test_clients_round_trip_exactly(store: Store) -> None:
    confidential = make_client("mobile")
    public = make_client(
        "spa",
        secret_hash=b"",
        grant_types=frozenset({GrantType.PASSWORD}),
        scopes=frozenset(),
        default_scopes=(),
        disabled=True,
        created_at=datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    )
    await store.create_client(confidential)
    await store.create_client(public)

    stored = await store.get_client("mobile")
    assert stored == confidential
    assert stored is not None
    assert stored.audiences == ("api", "billing", "a-first")  # order kept
    assert stored.default_scopes == ("write", "read")
    assert all(isinstance(g, GrantType) for g in stored.grant_types)
    assert await store.get_client("spa") == public
    for client in (stored, await store.get_client("spa")):
        assert client is not None
        assert is_utc_aware(client.created_at)
    assert await store.get_client("nobody") is None


async def test_a_taken_client_id_is_refused_without_revealing_the_secret(store: Store) -> None:
    await store.create_client(make_client("mobile"))

    with pytest.raises(AlreadyExists) as caught:
        await store.create_client(make_client("mobile", audiences=("other",)))

    assert "mobile" in caught.value.message
    assert SECRET_HASH.hex() not in caught.value.message
    assert await store.get_client("mobile") == make_client("mobile")


async def test_update_and_delete_client(store: Store) -> None:
    await store.create_client(make_client("mobile"))
    new_hash = digest("rotated secret")

    assert await store.update_client("mobile") == make_client("mobile")
    assert await store.update_client("mobile", secret_hash=new_hash) == make_client(
        "mobile", secret_hash=new_hash
    )
    assert await store.update_client("mobile", disabled=True) == make_client(
        "mobile", secret_hash=new_hash, disabled=True
    )
    assert await store.update_client("nobody", disabled=True) is None

    assert await store.delete_client("mobile") is True
    assert await store.delete_client("mobile") is False
    assert await store.get_client("mobile") is None


# -- sessions ---------------------------------------------------------------------


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


# -- consuming refresh tokens --------------------------------------------------------


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


# -- revocations ----------------------------------------------------------------------


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


# -- pruning ---------------------------------------------------------------------------


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


# -- opening -----------------------------------------------------------------------------


async def test_concurrent_opens_apply_each_migration_once(
    backend: Backend, open_store: OpenStore
) -> None:
    # On SQLite, switching a new file to WAL can answer SQLITE_BUSY at once (busy_timeout
    # does not cover it): the store retries, so racing opens (sibling workers) all succeed.
    stores = await asyncio.gather(*(open_store() for _ in range(4)))

    versions = {await store.schema_version() for store in stores}
    files = [f for f in backend.migrations.iterdir() if f.name.endswith(".sql")]
    assert versions == {len(files)}
    assert await stores[0].key_ring_generation() == 0  # the seed row was inserted once


LIFECYCLE_CALLS: dict[str, Callable[[Store], Awaitable[object]]] = {
    "update_principal": lambda s: s.update_principal("p-1", disabled=True),
    "delete_principal": lambda s: s.delete_principal("p-1"),
    "create_client": lambda s: s.create_client(make_client()),
    "get_client": lambda s: s.get_client("mobile"),
    "update_client": lambda s: s.update_client("mobile", disabled=True),
    "delete_client": lambda s: s.delete_client("mobile"),
    "create_session": start_session,
    "find_refresh": lambda s: s.find_refresh(digest("rt")),
    "consume_refresh": lambda s: consume(s, "rt", "rt-1", T0),
    "record_revocation": lambda s: s.record_revocation(
        Revocation(RevocationKind.TOKEN, "j", 0, 1), at=T0
    ),
    "list_revocations": lambda s: s.list_revocations(0),
    "revocations_since": lambda s: s.revocations_since(T0, 0),
    "prune": lambda s: s.prune(T0, sealed_before=T0),
    "open": lambda s: s.open(),
}


@pytest.mark.parametrize("call", LIFECYCLE_CALLS.values(), ids=list(LIFECYCLE_CALLS))
async def test_lifecycle_use_after_close_is_unavailable(
    store: Store, call: Callable[[Store], Awaitable[object]]
) -> None:
    await store.close()

    with pytest.raises(Unavailable, match="closed"):
        await call(store)


# -- PostgreSQL specifics -------------------------------------------------------------------


async def test_postgres_unreachable_is_unavailable_without_the_password() -> None:
    store = PostgresStore(
        "postgresql://authority:pa55-w0rd%21@127.0.0.1:1/test?password=other-s3cret",
        connect_timeout=1,
        command_timeout=1,
    )
    started = time.monotonic()

    with pytest.raises(Unavailable, match="PostgreSQL is unavailable") as caught:
        await store.open()

    assert time.monotonic() - started < 3
    for secret in ("pa55-w0rd", "other-s3cret"):
        assert secret not in caught.value.message
        assert secret not in repr(caught.value)
    await store.close()
    await store.close()


class Proxy:
    """A TCP relay in front of the test database that can freeze (keep the connections,
    stop answering) or vanish (drop the connections and stop listening)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def freeze(self) -> None:
        self._flowing.clear()

    def vanish(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._flowing.set()


@asynccontextmanager
async def proxied_store() -> AsyncIterator[tuple[PostgresStore, Proxy]]:
    async with fresh_schema() as (url, schema):
        parts = urlsplit(url)
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        await proxy.start()
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        dsn = urlunsplit(parts._replace(netloc=netloc))
        store = PostgresStore(dsn, schema=schema, command_timeout=1, connect_timeout=1)
        try:
            await store.open()
            await store.create_principal(make_principal())
            yield store, proxy
        finally:
            started = time.monotonic()
            await store.close()
            assert time.monotonic() - started < 3, "close() must not hang on a dead server"
            proxy.vanish()


@pytest.mark.parametrize("failure", ["vanish", "freeze"])
async def test_postgres_that_went_away_is_unavailable_within_seconds(failure: str) -> None:
    async with proxied_store() as (store, proxy):
        getattr(proxy, failure)()
        started = time.monotonic()

        for call in (
            lambda: store.get_principal("p-1"),
            lambda: consume(store, "rt", "rt-1", T0),
        ):
            with pytest.raises(Unavailable, match="PostgreSQL is unavailable"):
                async with asyncio.timeout(10):
                    await call()

        assert time.monotonic() - started < 8


async def test_postgres_refuses_a_schema_from_a_newer_build() -> None:
    async with fresh_schema() as (url, schema):
        store = PostgresStore(url, schema=schema)
        await store.open()
        await store.close()
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future')")
        finally:
            await conn.close()

        newer = PostgresStore(url, schema=schema)
        with pytest.raises(Unavailable, match="newer"):
            await newer.open()
        await newer.close()


async def test_postgres_schemas_are_independent_stores() -> None:
    async with fresh_schema() as (url, one), fresh_schema() as (_, two):
        first, second = PostgresStore(url, schema=one), PostgresStore(url, schema=two)
        await first.open()
        await second.open()
        try:
            await first.create_principal(make_principal())
            async with first.key_ring_transaction():
                pass

            assert await second.get_principal("p-1") is None
            assert await second.key_ring_generation() == 0
            await second.create_principal(make_principal())  # no clash across schemas
        finally:
            await first.close()
            await second.close()


# -- choosing a store ------------------------------------------------------------------------


def test_make_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    path = tmp_path / "authority.db"

    assert isinstance(make_store(None, path), SqliteStore)
    assert isinstance(make_store("", path), SqliteStore)
    assert isinstance(make_store("postgresql://u:pw@db/authority", path), PostgresStore)
    assert isinstance(make_store("postgres://db/authority", path), PostgresStore)
    assert not path.exists()  # no I/O


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://root:hunter2-secret@db/authority", "'mysql'"),
        ("postgresql+asyncpg://root:hunter2-secret@db/authority", "'postgresql+asyncpg'"),
        ("root:hunter2-secret@db/authority", None),
        ("hunter2-secret", None),
    ],
)
def test_make_store_refuses_other_urls_without_echoing_them(
    tmp_path: Path, url: str, named: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_store(url, tmp_path / "authority.db")

    assert "hunter2" not in caught.value.message
    if named is not None:
        assert named in caught.value.message
