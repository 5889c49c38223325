"""The store's half of "credential changes are linearizable with logins", on every backend.

``change_credentials`` and ``create_session(..., generation=...)`` are ordered by the
store: a session insert either commits first, and the change then revokes it (and records
a session revocation covering all its tokens), or it is refused. The race below runs them
concurrently, many times, on real connections (a pool on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from authority.domain.events import new_event
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.base import Store

from .builders import (
    HASH,
    OTHER_HASH,
    T0,
    digest,
    epoch,
    make_principal,
    make_refresh,
    make_session,
    start_session,
)

HORIZON = 3600.0


def subject_revocation(principal_id: str = "p-1") -> Revocation:
    return Revocation(RevocationKind.SUBJECT, principal_id, epoch(T0), epoch(T0) + HORIZON)


async def test_a_session_is_stored_only_under_the_generation_checked(store: Store) -> None:
    await store.create_principal(make_principal())
    principal = await store.get_principal("p-1")
    assert principal is not None
    assert principal.generation == 0
    assert principal.credentials_changed_at is None

    stored = await store.create_session(make_session("s-1"), make_refresh("a", "s-1"), generation=0)
    change = await store.change_credentials("p-1", at=T0, password_hash=OTHER_HASH)
    stale = await store.create_session(make_session("s-2"), make_refresh("b", "s-2"), generation=0)
    fresh = await store.create_session(make_session("s-3"), make_refresh("c", "s-3"), generation=1)

    assert (stored, stale, fresh) == (True, False, True)
    assert change.principal == replace(
        make_principal(), password_hash=OTHER_HASH, generation=1, credentials_changed_at=T0
    )
    assert change.revocations == ()  # no revocation asked: the sessions stay
    assert await store.find_refresh(digest("b")) is None  # the refused one wrote nothing
    found = await store.find_refresh(digest("a"))
    assert found is not None
    assert found[1].revoked_at is None


async def test_disabled_deleted_or_unknown_principals_start_no_session(store: Store) -> None:
    await store.create_principal(make_principal())
    await store.create_principal(make_principal("bob", "p-2"))
    await store.change_credentials("p-1", at=T0, disabled=True)
    deleted = await store.change_credentials("p-2", at=T0, delete=True)

    for subject, generation in (("p-1", 1), ("p-2", 1), ("p-404", 0)):
        session = make_session(f"s-{subject}", subject=subject)
        first = make_refresh(subject, session.id)
        assert await store.create_session(session, first, generation=generation) is False
        assert await store.find_refresh(digest(subject)) is None
    assert deleted.principal is not None  # as it was when deleted
    assert await store.get_principal("p-2") is None
    assert await store.get_principal_by_name("bob") is None


async def test_a_change_ends_every_session_and_covers_all_their_tokens(store: Store) -> None:
    await store.create_principal(make_principal())
    await start_session(store, "s-1")
    await start_session(store, "s-2")
    await start_session(store, "s-old")
    await start_session(store, "s-other", subject="p-2")
    session_revocation = Revocation(RevocationKind.SESSION, "s-old", epoch(T0), epoch(T0) + 60)
    await store.record_revocation(session_revocation, at=T0)
    # An access-only grant keeps a session without refresh tokens.
    assert await store.create_session(make_session("s-access"), None, generation=0) is True
    at = T0 + timedelta(seconds=1)
    event = new_event("principal.password_set", "principal", "p-1", at=at, data={})

    change = await store.change_credentials(
        "p-1", at=at, password_hash=OTHER_HASH, revocation=subject_revocation(), events=(event,)
    )

    ends = epoch(T0) + HORIZON
    assert change.revocations[0] == subject_revocation()
    assert sorted(change.revocations[1:], key=lambda r: r.value) == [
        Revocation(RevocationKind.SESSION, sid, ends, ends)  # every token of the session
        for sid in ("s-1", "s-2", "s-access")  # s-old was revoked already, s-other is not p-1's
    ]
    durable = {(r.kind, r.value): r for r in await store.list_revocations(epoch(T0))}
    for revocation in change.revocations:
        assert durable[(revocation.kind, revocation.value)] == revocation
    for sid, revoked in (("s-1", True), ("s-2", True), ("s-other", False)):
        found = await store.find_refresh(digest(f"{sid}/rt-0"))
        assert found is not None
        assert (found[1].revoked_at == at) is revoked
    assert [e.event.id for e in await store.read_outbox()] == [event.id]


async def test_a_revocation_of_an_unknown_subject_is_still_recorded(store: Store) -> None:
    await start_session(store, "s-1", subject="client-7")

    change = await store.change_credentials(
        "client-7", at=T0, revocation=subject_revocation("client-7")
    )

    assert change.principal is None
    assert [r.value for r in change.revocations] == ["client-7", "s-1"]
    assert await store.change_credentials("nobody", at=T0) == type(change)(None, ())


async def test_a_rehash_never_overwrites_a_password_set_meanwhile(store: Store) -> None:
    await store.create_principal(make_principal())

    assert await store.rehash_password("p-1", generation=0, password_hash=OTHER_HASH) is True
    await store.change_credentials("p-1", at=T0, password_hash=HASH)
    assert await store.rehash_password("p-1", generation=0, password_hash=OTHER_HASH) is False

    principal = await store.get_principal("p-1")
    assert principal is not None
    assert (principal.password_hash, principal.generation) == (HASH, 1)


async def test_concurrent_logins_and_a_change_never_leave_a_live_session(store: Store) -> None:
    """Whatever the interleaving: each login's session is either refused or revoked by the
    change (and covered by one of its session revocations)."""
    for round_ in range(20):
        principal_id = f"p-{round_}"
        await store.create_principal(make_principal(f"user-{round_}", principal_id))

        async def login(n: int, principal_id: str = principal_id) -> tuple[str, bool]:
            session = make_session(f"{principal_id}/s-{n}", subject=principal_id)
            first = make_refresh(session.id, session.id)
            return session.id, await store.create_session(session, first, generation=0)

        async def change(principal_id: str = principal_id) -> tuple[Revocation, ...]:
            await asyncio.sleep(0)
            done = await store.change_credentials(
                principal_id, at=T0, disabled=True, revocation=subject_revocation(principal_id)
            )
            return done.revocations

        *logins, revocations = await asyncio.gather(*(login(n) for n in range(6)), change())
        covered = {r.value for r in revocations if r.kind is RevocationKind.SESSION}
        for session_id, stored in logins:  # type: ignore[misc]
            found = await store.find_refresh(digest(session_id))
            assert (found is not None) is stored
            if found is not None:
                assert found[1].revoked_at is not None, session_id
                assert session_id in covered, session_id
