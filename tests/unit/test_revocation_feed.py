"""The revocation feed: ordered changes, resumable within a bounded ring, bounded queues whose
overflow ends the subscriber (never skips a change), and only real changes published."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest

from authority.api.reader_auth import RevocationReaders
from authority.api.revocation_service import RevocationServicer
from authority.domain.clock import ManualClock
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.domain.tokens import AccessClaims, Verification, VerifyReason
from authority.services.admin_credential import AdminCredential
from authority.services.revocation_feed import (
    FeedClosed,
    FeedEnded,
    RevocationFeed,
    SubscriberLagged,
)
from authority.services.revocations import RevocationService
from authority.store.base import Store
from authority.v1 import revocation_pb2


def revocation(value: str, issued_before: float = 100.0, expires_at: float = 1000.0) -> Revocation:
    return Revocation(RevocationKind.TOKEN, value, issued_before, expires_at)


def feed_of(view: RevocationSet | None = None, **options: Any) -> RevocationFeed:
    view = view if view is not None else RevocationSet()
    return RevocationFeed(view.snapshot, **options)


async def drain(subscription: Any) -> list[tuple[int, Revocation]]:
    """Everything already available, without waiting."""
    changes = []
    while (change := await subscription.next(0)) is not None:
        changes.append(change)
    return changes


# --- sequence and epoch --------------------------------------------------------------


def test_sequence_numbers_increase_from_one_and_tokens_name_the_epoch() -> None:
    feed = feed_of()
    assert feed.seq == 0
    assert [feed.publish(revocation(f"j{i}")) for i in range(3)] == [1, 2, 3]
    assert feed.token(3) == f"{feed.epoch}:3"
    assert feed.backlog(feed.token(3)) == []


def test_every_feed_has_its_own_epoch() -> None:
    assert len({feed_of().epoch for _ in range(20)}) == 20


# --- resume --------------------------------------------------------------------------


async def test_a_fresh_subscriber_gets_a_snapshot_then_live_changes() -> None:
    view = RevocationSet()
    view.add(revocation("old"))
    feed = feed_of(view)
    feed.publish(revocation("old"))
    with feed.subscribe() as subscription:
        assert not subscription.resumed
        assert subscription.take_snapshot() == [revocation("old")]
        assert subscription.take_snapshot() is None  # handed over once
        assert subscription.position == 1
        feed.publish(revocation("new"))
        assert await subscription.next(1) == (2, revocation("new"))
        assert subscription.position == 2


async def test_resuming_gives_exactly_the_missed_changes_then_live_ones() -> None:
    feed = feed_of()
    for i in range(1, 6):
        feed.publish(revocation(f"j{i}"))
    with feed.subscribe(feed.token(2)) as subscription:
        assert subscription.resumed
        assert subscription.take_snapshot() is None
        assert subscription.position == 2
        feed.publish(revocation("j6"))
        assert [seq for seq, _ in await drain(subscription)] == [3, 4, 5, 6]
        assert [r.value for _, r in feed.backlog(feed.token(2)) or []] == [
            "j3",
            "j4",
            "j5",
            "j6",
        ]


async def test_resuming_when_up_to_date_sends_nothing() -> None:
    feed = feed_of()
    feed.publish(revocation("j1"))
    with feed.subscribe(feed.token(1)) as subscription:
        assert subscription.resumed
        assert await subscription.next(0.01) is None  # no change within the wait


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "other-epoch:1",
        "{epoch}:",
        "{epoch}:x",
        "{epoch}:-1",
        "{epoch}:99",  # the future: from an earlier run with the same epoch?
        "{epoch}:1-partial",  # after part of a snapshot
        "{epoch}:" + "1" * 100,
        "{epoch}:\u0661",  # a non-ASCII digit
    ],
)
def test_tokens_that_cannot_be_resumed_get_a_snapshot(token: str) -> None:
    feed = feed_of()
    feed.publish(revocation("j1"))
    feed.publish(revocation("j2"))
    token = token.replace("{epoch}", feed.epoch)
    assert feed.backlog(token) is None
    with feed.subscribe(token) as subscription:
        assert not subscription.resumed


def test_a_partial_snapshot_token_is_not_resumable() -> None:
    feed = feed_of()
    feed.publish(revocation("j1"))
    assert feed.backlog(feed.token(1, resumable=False)) is None
    assert feed.backlog(feed.token(1)) == []


def test_a_token_from_another_process_gets_a_snapshot() -> None:
    first, second = feed_of(), feed_of()
    for feed in (first, second):
        feed.publish(revocation("j1"))
        feed.publish(revocation("j2"))
    assert second.backlog(first.token(1)) is None
    assert first.backlog(first.token(1)) == [(2, revocation("j2"))]


def test_once_the_ring_has_moved_on_a_snapshot_is_needed() -> None:
    feed = feed_of(capacity=3)
    for i in range(1, 6):
        feed.publish(revocation(f"j{i}"))
    # The ring holds 3, 4, 5: resuming after 2 still works, after 1 (missing 2) does not.
    assert [seq for seq, _ in feed.backlog(feed.token(2)) or []] == [3, 4, 5]
    assert feed.backlog(feed.token(1)) is None
    assert feed.backlog(feed.token(0)) is None


def test_a_resume_token_for_the_start_works_until_the_ring_overflows() -> None:
    feed = feed_of(capacity=2)
    assert feed.backlog(feed.token(0)) == []
    feed.publish(revocation("j1"))
    feed.publish(revocation("j2"))
    assert [seq for seq, _ in feed.backlog(feed.token(0)) or []] == [1, 2]
    feed.publish(revocation("j3"))
    assert feed.backlog(feed.token(0)) is None


# --- slow subscribers -----------------------------------------------------------------


async def test_a_slow_subscriber_is_ended_after_what_it_was_given_never_skipped() -> None:
    feed = feed_of(queue_size=2)
    slow = feed.subscribe()
    fast = feed.subscribe()
    feed.publish(revocation("j1"))
    assert await fast.next(0) == (1, revocation("j1"))
    feed.publish(revocation("j2"))
    assert await fast.next(0) == (2, revocation("j2"))
    feed.publish(revocation("j3"))  # the slow one's queue (j1, j2) is full: it is out
    assert feed.subscribers == 1
    assert await slow.next(0) == (1, revocation("j1"))
    assert await slow.next(0) == (2, revocation("j2"))
    with pytest.raises(SubscriberLagged, match="resume_token"):
        await slow.next(0)
    with pytest.raises(SubscriberLagged):
        await slow.next(0)  # and stays ended
    assert await fast.next(0) == (3, revocation("j3"))  # others carry on
    # The slow one resumes where it stopped, from the ring, without a snapshot.
    with feed.subscribe(feed.token(slow.position)) as again:
        assert again.resumed
        assert await drain(again) == [(3, revocation("j3"))]


async def test_a_resumed_backlog_does_not_count_against_the_queue() -> None:
    feed = feed_of(queue_size=2)
    for i in range(1, 11):
        feed.publish(revocation(f"j{i}"))
    with feed.subscribe(feed.token(0)) as subscription:
        feed.publish(revocation("j11"))
        assert [seq for seq, _ in await drain(subscription)] == list(range(1, 12))


async def test_a_waiting_subscriber_wakes_up_for_a_change() -> None:
    feed = feed_of()
    with feed.subscribe() as subscription:
        waiting = asyncio.create_task(subscription.next(5))
        await asyncio.sleep(0.01)
        feed.publish(revocation("j1"))
        assert await asyncio.wait_for(waiting, 1) == (1, revocation("j1"))


async def test_the_subscription_is_an_async_iterator() -> None:
    feed = feed_of()
    with feed.subscribe() as subscription:
        feed.publish(revocation("j1"))
        feed.publish(revocation("j2"))
        seen = []
        async for seq, _ in subscription:
            seen.append(seq)
            if seq == 2:
                break
        assert seen == [1, 2]


async def test_leaving_the_subscription_unsubscribes() -> None:
    feed = feed_of()
    with feed.subscribe() as subscription:
        assert feed.subscribers == 1
    assert feed.subscribers == 0
    feed.publish(revocation("j1"))
    with pytest.raises(FeedEnded):
        await subscription.next(0)


async def test_closing_ends_every_subscriber_and_refuses_new_ones() -> None:
    feed = feed_of()
    subscription = feed.subscribe()
    waiting = asyncio.create_task(subscription.next(None))
    await asyncio.sleep(0.01)
    feed.close()
    with pytest.raises(FeedClosed, match="shutting down"):
        await asyncio.wait_for(waiting, 1)
    assert feed.subscribers == 0
    with pytest.raises(FeedClosed):
        feed.subscribe()


_READER_SECRET = "adm_unit_" + "r" * 40


class _NoTokens:
    """These streams are opened with the admin credential: no token is ever valid."""

    def verify(self, token: str, audiences: Iterable[str] = ()) -> Verification:
        return Verification(VerifyReason.MALFORMED, "not a token")


class _Aborted(Exception):
    pass


class _Context:
    """What WatchRevocations uses of a servicer context."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {_READER_SECRET}"),)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.status = (code, details)
        raise _Aborted


def _watch(feed: RevocationFeed, view: RevocationSet, context: _Context) -> Any:
    readers = RevocationReaders(verifier=_NoTokens(), admin=AdminCredential(_READER_SECRET))
    servicer = RevocationServicer(
        view=view,
        feed=feed,
        clock=ManualClock(),
        heartbeat=timedelta(seconds=30),
        readers=readers,
    )
    return servicer.WatchRevocations(revocation_pb2.WatchRevocationsRequest(), context)


async def test_a_stream_too_far_behind_ends_with_a_status_to_reconnect_on() -> None:
    view = RevocationSet()
    feed = feed_of(view, queue_size=2)
    context = _Context()
    stream = _watch(feed, view, context)
    assert (await anext(stream)).snapshot.complete
    for i in range(3):
        feed.publish(revocation(f"j{i}"))
    given = [await anext(stream), await anext(stream)]
    assert [m.revocation.value for m in given] == ["j0", "j1"]
    assert given[-1].resume_token == feed.token(2)
    with pytest.raises(_Aborted):
        await anext(stream)
    assert context.status is not None
    assert context.status[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resume_token" in context.status[1]
    assert feed.subscribers == 0


async def test_streams_end_unavailable_at_shutdown_and_unsubscribe_when_cancelled() -> None:
    view = RevocationSet()
    feed = feed_of(view)
    cancelled, closed = _Context(), _Context()
    first, second = _watch(feed, view, cancelled), _watch(feed, view, closed)
    await anext(first)
    await anext(second)
    assert feed.subscribers == 2
    await first.aclose()  # what a client's cancel comes to
    assert feed.subscribers == 1
    assert cancelled.status is None
    feed.close()
    with pytest.raises(_Aborted):
        await anext(second)
    assert closed.status is not None
    assert closed.status[0] is grpc.StatusCode.UNAVAILABLE


# --- what is published ----------------------------------------------------------------


def test_add_says_whether_the_view_changed() -> None:
    view = RevocationSet()
    assert view.add(revocation("j1", 100, 1000))
    assert not view.add(revocation("j1", 100, 1000))  # the same again
    assert not view.add(revocation("j1", 50, 900))  # older and shorter: nothing new
    assert view.add(revocation("j1", 100, 2000))  # lives longer
    assert view.add(revocation("j1", 150, 900))  # covers later tokens
    assert view.get(RevocationKind.TOKEN, "j1") == revocation("j1", 150, 2000)
    assert len(view) == 1


def test_the_snapshot_leaves_out_expired_entries() -> None:
    view = RevocationSet()
    view.add(revocation("gone", expires_at=10))
    view.add(revocation("live", expires_at=100))
    assert {r.value for r in view.snapshot()} == {"gone", "live"}
    assert [r.value for r in view.snapshot(now=50)] == ["live"]


def test_identity_checks_follow_the_same_rule_as_verify() -> None:
    view = RevocationSet()
    view.add(Revocation(RevocationKind.SUBJECT, "p_1", 100, 1000))
    view.add(Revocation(RevocationKind.SESSION, "s_1", 100, 1000))
    for jti, sid, sub, iat, revoked in [
        ("j", "", "p_1", 100, True),  # at the not-before: revoked
        ("j", "", "p_1", 101, False),  # after it
        ("j", "s_1", "p_2", 99, True),
        ("j", "", "p_2", 0, False),
        ("", "", "", 0, False),  # empty values match nothing
    ]:
        claims = AccessClaims("i", sub, ("a",), 2000, iat, iat, jti, sid, "", (), "k")
        assert view.is_revoked(claims) is revoked
        assert view.is_revoked_identity(jti, sid, sub, "", iat) is revoked


class _Store:
    """Just what the service uses here; polling reads the same revocations every time."""

    def __init__(self, found: list[Revocation]) -> None:
        self.found = found

    async def revocations_since(self, since: object, now: float) -> list[Revocation]:
        return list(self.found)

    async def list_revocations(self, now: float) -> list[Revocation]:
        return list(self.found)

    async def record_revocation(
        self, revocation: Revocation, *, at: object, events: object = ()
    ) -> int:
        return 0


def _service(view: RevocationSet, feed: RevocationFeed, store: _Store) -> RevocationService:
    return RevocationService(
        store=cast(Store, store),
        view=view,
        clock=ManualClock(),
        max_access_ttl=timedelta(minutes=10),
        leeway=timedelta(seconds=30),
        grace=timedelta(seconds=10),
        feed=feed,
    )


async def test_only_changes_of_the_view_are_published_whatever_the_path() -> None:
    view = RevocationSet()
    feed = feed_of(view)
    store = _Store([revocation("j1"), revocation("j2")])
    service = _service(view, feed, store)
    assert await service.load() == 2
    assert feed.seq == 2
    service.received(revocation("j1"))  # the fan-out repeats what the store gave
    await service.poll()  # and so does every poll, by its overlap
    await service.poll()
    assert feed.seq == 2
    service.received(revocation("j3"))
    assert feed.seq == 3
    # A wider entry is published merged, as the view now holds it.
    service.received(revocation("j1", issued_before=50, expires_at=5000))
    assert feed.seq == 4
    assert feed.backlog(feed.token(3)) == [(4, revocation("j1", 100, 5000))]


async def test_a_local_revocation_is_published() -> None:
    view = RevocationSet()
    feed = feed_of(view)
    service = _service(view, feed, _Store([]))
    with feed.subscribe() as subscription:
        await service.revoke(RevocationKind.SESSION, "s_1")
        change = await subscription.next(0)
        assert change is not None
        assert (change[0], change[1].kind, change[1].value) == (1, RevocationKind.SESSION, "s_1")
