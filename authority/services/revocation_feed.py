"""Every change to this process's revocation view, in order, for followers (WatchRevocations).

Memory stays bounded whatever the followers do: the feed keeps only the last
``capacity`` changes (so a follower that reconnects soon can resume without a
snapshot), and each follower a queue of at most ``queue_size`` undelivered
changes. A follower that falls further behind is ended with ``SubscriberLagged``
(after what it was already given), never silently skipped: it reconnects and
resumes from the ring or, when that has moved on, takes a snapshot.

Sequence numbers count changes since this process started; ``epoch`` is random per
process, so a resume token from another replica, worker or an earlier run is
recognised as foreign and answered with a snapshot rather than misread.

Everything runs on the event loop thread: ``publish`` and ``subscribe`` never
await, so a subscriber's snapshot or backlog and its live changes meet exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from types import TracebackType

from authority.domain.revocation import Revocation

# (sequence number, the view's entry after the change)
Change = tuple[int, Revocation]

DEFAULT_CAPACITY = 10_000
DEFAULT_QUEUE_SIZE = 1_000
# A resume token longer than this is nobody's: answer with a snapshot without parsing it.
_MAX_TOKEN_LENGTH = 64
# Marks the resume token of a snapshot chunk that is not the last: resuming after part of
# a snapshot would leave the follower's view incomplete, so such a token is not resumable.
_PARTIAL = "-partial"


class FeedEnded(Exception):
    """The subscription is over; the follower should reconnect with its last resume token."""

    default = "the revocation feed ended"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default)


class FeedClosed(FeedEnded):
    default = "the server is shutting down; reconnect (another replica, or later)"


class SubscriberLagged(FeedEnded):
    default = "fell too far behind the revocation feed; reconnect with the last resume_token"


class Subscription:
    """One follower: a snapshot or a backlog to start from, then live changes.

    Use as a context manager (leaving it unsubscribes), and either iterate it or call
    ``next`` with a timeout (for heartbeats)."""

    def __init__(
        self,
        feed: RevocationFeed,
        *,
        snapshot: list[Revocation] | None,
        backlog: list[Change],
        position: int,
        queue_size: int,
    ) -> None:
        self._feed = feed
        self._snapshot = snapshot
        # True when the follower's resume token was honoured: no snapshot needed.
        self.resumed = snapshot is None
        # The sequence number of the last change handed out, or of the snapshot.
        self.position = position
        self._backlog = deque(backlog)
        self._queue: deque[Change] = deque()
        self._queue_size = queue_size
        self._ended: type[FeedEnded] | None = None
        self._wakeup = asyncio.Event()

    def take_snapshot(self) -> list[Revocation] | None:
        """The view as of subscribing (None when resumed), handed over once: a long-lived
        stream should not keep a copy of the whole view after sending it."""
        snapshot, self._snapshot = self._snapshot, None
        return snapshot

    def _offer(self, change: Change) -> bool:
        """Queue a live change; False (and the subscription ends) when the queue is full."""
        if self._ended is not None:
            return False
        if len(self._queue) >= self._queue_size:
            self._end(SubscriberLagged)
            return False
        self._queue.append(change)
        self._wakeup.set()
        return True

    def _end(self, reason: type[FeedEnded]) -> None:
        if self._ended is None:
            self._ended = reason
        self._wakeup.set()

    async def next(self, within: float | None = None) -> Change | None:
        """The next change, or None when none came within ``within`` seconds. Raises a
        FeedEnded once everything given before the end has been handed out."""
        deadline = None if within is None else asyncio.get_running_loop().time() + within
        while True:
            source = self._backlog or self._queue
            if source:
                change = source.popleft()
                self.position = change[0]
                return change
            if self._ended is not None:
                raise self._ended()
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup.wait()
            except TimeoutError:
                return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        change = await self.next()
        assert change is not None  # no time limit: only a change or FeedEnded
        return change

    def close(self) -> None:
        """Unsubscribe; idempotent."""
        self._feed._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RevocationFeed:
    """The ordered changes of one process's revocation view, with a bounded history."""

    def __init__(
        self,
        snapshot: Callable[[], list[Revocation]],
        *,
        capacity: int = DEFAULT_CAPACITY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        epoch: str | None = None,
    ) -> None:
        if capacity <= 0 or queue_size <= 0:
            raise ValueError("capacity and queue_size must be positive")
        self._snapshot = snapshot
        self._ring: deque[Change] = deque(maxlen=capacity)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._seq = 0
        self._closed = False
        self.epoch = epoch or secrets.token_hex(8)

    @property
    def seq(self) -> int:
        """The sequence number of the latest change (0 before any)."""
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def token(self, seq: int, *, resumable: bool = True) -> str:
        """The resume token for "after change ``seq``"; a non-resumable one (for a snapshot
        chunk that is not the last) makes the next subscribe start with a snapshot."""
        return f"{self.epoch}:{seq}" + ("" if resumable else _PARTIAL)

    def publish(self, revocation: Revocation) -> int:
        """Record a change of the view and hand it to every subscriber; returns its number.
        Subscribers whose queue is full are ended (they will resume or take a snapshot)."""
        self._seq += 1
        change = (self._seq, revocation)
        self._ring.append(change)
        lagging = [s for s in self._subscribers if not s._offer(change)]
        for subscription in lagging:
            self._subscribers.discard(subscription)
        return self._seq

    def backlog(self, resume_token: str) -> list[Change] | None:
        """The changes after ``resume_token``, or None when they cannot all be given: a
        token from another epoch, malformed, partial, in the future, or older than the ring."""
        if not resume_token or len(resume_token) > _MAX_TOKEN_LENGTH:
            return None
        epoch, _, seq_text = resume_token.rpartition(":")
        if epoch != self.epoch or not (seq_text.isascii() and seq_text.isdecimal()):
            return None
        after = int(seq_text)
        if after > self._seq:
            return None
        if after == self._seq:
            return []
        if not self._ring or self._ring[0][0] > after + 1:
            return None  # some of the changes after ``after`` have left the ring
        skip = after + 1 - self._ring[0][0]
        return list(itertools.islice(self._ring, skip, None))

    def subscribe(self, resume_token: str = "") -> Subscription:
        """Follow the feed from ``resume_token`` when possible, else from a snapshot taken
        now. Raises FeedClosed once the feed is closed."""
        if self._closed:
            raise FeedClosed()
        backlog = self.backlog(resume_token)
        if backlog is None:
            subscription = Subscription(
                self,
                snapshot=self._snapshot(),
                backlog=[],
                position=self._seq,
                queue_size=self._queue_size,
            )
        else:
            subscription = Subscription(
                self,
                snapshot=None,
                backlog=backlog,
                position=self._seq - len(backlog),
                queue_size=self._queue_size,
            )
        self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription._end(FeedEnded)

    def close(self) -> None:
        """End every subscription (at shutdown), so open streams finish instead of holding
        up a graceful stop until its grace period runs out."""
        self._closed = True
        for subscription in self._subscribers:
            subscription._end(FeedClosed)
        self._subscribers.clear()
