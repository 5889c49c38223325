"""The Issue path's two sharing primitives keep the guarantees of doing the work alone.

``SharedReads``: a caller never gets the result of a read that began before it called
(so an admin change committed before the call is always seen), concurrent callers share
the next read, and nothing is kept once a key has no reader. ``GroupCommit``: a caller
returns only after its own event was appended, concurrent events share a transaction,
a failing event fails alone, and every caller gets an answer even if the appender dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from authority.domain.errors import Unavailable
from authority.domain.events import Event, new_event
from authority.services.group_commit import GroupCommit
from authority.services.shared_reads import SharedReads


class Row:
    """A value the "database" holds, a version bumped by each write."""

    def __init__(self) -> None:
        self.version = 0
        self.reads: list[int] = []  # the version each read started at
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, key: str) -> int:
        started_at = self.version
        self.reads.append(started_at)
        await self.gate.wait()
        await asyncio.sleep(0)
        return started_at


async def test_a_caller_never_joins_a_read_that_began_before_it() -> None:
    row = Row()
    reads = SharedReads(row.read)
    row.gate.clear()
    early = asyncio.create_task(reads.get("k"))
    await asyncio.sleep(0.01)  # the first read is running (at version 0)
    row.version = 1  # a change commits while it runs
    late = [asyncio.create_task(reads.get("k")) for _ in range(5)]
    await asyncio.sleep(0.01)
    row.gate.set()
    assert await early == 0
    assert await asyncio.gather(*late) == [1] * 5  # the next read, shared by all five
    assert row.reads == [0, 1]
    assert reads._slots == {}  # nothing kept: not a cache


async def test_keys_are_independent_and_results_are_not_kept() -> None:
    row = Row()
    reads = SharedReads(row.read)
    assert await asyncio.gather(reads.get("a"), reads.get("b")) == [0, 0]
    row.version = 7
    assert await reads.get("a") == 7  # read again: nothing remembered
    assert len(row.reads) == 3


async def test_a_failed_read_fails_its_callers_and_the_next_read_is_fresh() -> None:
    calls = 0

    async def flaky(key: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise Unavailable("down")
        return calls

    reads = SharedReads(flaky)
    first = await asyncio.gather(reads.get("k"), return_exceptions=True)
    assert isinstance(first[0], Unavailable)
    assert await reads.get("k") == 2


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    row = Row()
    reads = SharedReads(row.read)
    row.gate.clear()
    await asyncio.sleep(0)
    running = asyncio.create_task(reads.get("k"))
    await asyncio.sleep(0.01)
    impatient = asyncio.create_task(reads.get("k"))
    patient = asyncio.create_task(reads.get("k"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    row.gate.set()
    assert await running == 0
    assert await patient == 0
    with pytest.raises(asyncio.CancelledError):
        await impatient


def _event(n: int) -> Event:
    return new_event("token.issued", "token", f"t{n}", at=datetime.now(UTC), data={"n": n})


class Log:
    def __init__(self, *, poison: str = "") -> None:
        self.committed: list[str] = []
        self.transactions = 0
        self.poison = poison

    async def append(self, events: Sequence[Event]) -> None:
        self.transactions += 1
        await asyncio.sleep(0.001)
        if any(e.aggregate_id == self.poison for e in events):
            raise Unavailable("refused")
        self.committed.extend(e.aggregate_id for e in events)


async def test_each_caller_returns_after_its_own_event_committed() -> None:
    log = Log()
    commit = GroupCommit(log.append)

    async def issue(n: int) -> None:
        await commit.append(_event(n))
        assert f"t{n}" in log.committed  # never returns before its event is written

    await asyncio.gather(*(issue(n) for n in range(50)))
    assert sorted(log.committed) == sorted(f"t{n}" for n in range(50))
    assert log.transactions < 50  # shared transactions


async def test_a_lone_event_is_written_at_once() -> None:
    log = Log()
    commit = GroupCommit(log.append)
    for n in range(3):
        await commit.append(_event(n))
    assert log.committed == ["t0", "t1", "t2"]
    assert log.transactions == 3


async def test_a_bad_event_fails_alone() -> None:
    log = Log(poison="t3")
    commit = GroupCommit(log.append)
    outcomes = await asyncio.gather(
        *(commit.append(_event(n)) for n in range(8)), return_exceptions=True
    )
    failed = [n for n, outcome in enumerate(outcomes) if outcome is not True]
    assert failed == [3]
    assert sorted(log.committed) == sorted(f"t{n}" for n in range(8) if n != 3)


async def test_a_refused_event_fails_only_its_caller() -> None:
    """An append may refuse items without failing (a client changed meanwhile): those
    callers get False, their neighbours in the same transaction True."""
    committed: list[str] = []

    async def append(events: Sequence[Event]) -> list[bool]:
        await asyncio.sleep(0.001)
        verdicts = [e.aggregate_id != "t2" for e in events]
        committed.extend(e.aggregate_id for e, ok in zip(events, verdicts, strict=True) if ok)
        return verdicts

    commit = GroupCommit(append)
    outcomes = await asyncio.gather(*(commit.append(_event(n)) for n in range(6)))
    assert outcomes == [n != 2 for n in range(6)]
    assert "t2" not in committed and len(committed) == 5


async def test_no_caller_waits_forever_when_the_appender_is_cancelled() -> None:
    started = asyncio.Event()

    async def stuck(events: Sequence[Event]) -> None:
        started.set()
        await asyncio.sleep(3600)

    commit = GroupCommit(stuck)
    callers = [asyncio.create_task(commit.append(_event(n))) for n in range(4)]
    await started.wait()
    assert commit._task is not None
    commit._task.cancel()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, Unavailable) for o in outcomes)
