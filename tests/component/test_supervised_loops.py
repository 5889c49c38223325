"""Background loops are supervised (``authority.loops``): a loop that raises something
unexpected is restarted with backoff, its consecutive crashes turn readiness off, and
it counts as recovered once it runs again. Before, such a loop stayed dead: the
revocation poll caught only ``Unavailable``, so a RuntimeError from its store ended
polling for good while the process still reported ready."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from authority.domain.backoff import Backoff
from authority.domain.clock import SystemClock
from authority.domain.revocation import Revocation, RevocationSet
from authority.domain.write_health import WriteHealth
from authority.loops import run_loops
from authority.services.revocations import RevocationService
from authority.store.sqlite import SqliteStore

FAST = Backoff(first=0.001, cap=0.01)
WAIT = 30.0  # generous: the machine is shared; every wait ends on a condition


class BrokenPollStore(SqliteStore):
    """A store whose revocation poll raises what no caller expects, until mended."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.broken = True
        self.polls = 0
        self.polled = asyncio.Condition()

    async def revocations_since(self, *args: Any, **kwargs: Any) -> list[Revocation]:
        async with self.polled:
            self.polls += 1
            self.polled.notify_all()
        if self.broken:
            raise RuntimeError("a driver bug")
        return await super().revocations_since(*args, **kwargs)

    async def wait_polls(self, count: int) -> None:
        async with self.polled:
            await self.polled.wait_for(lambda: self.polls >= count)


async def _until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 - WriteHealth is polled state, not an event
        await asyncio.sleep(0.01)


async def test_a_crashing_loop_is_restarted_and_readiness_follows(tmp_path: Path) -> None:
    store = BrokenPollStore(tmp_path / "authority.db")
    await store.open()
    service = RevocationService(
        store=store,
        view=RevocationSet(),
        clock=SystemClock(),
        max_access_ttl=timedelta(minutes=10),
        leeway=timedelta(seconds=30),
        grace=timedelta(seconds=30),
        poll_interval=timedelta(milliseconds=1),
    )
    health = WriteHealth(threshold=3)
    loops = asyncio.create_task(
        run_loops({"revocation-poll": service.run_poll}, health=health, backoff=FAST, settle=2.0)
    )
    try:
        async with asyncio.timeout(WAIT):
            await store.wait_polls(5)  # the poll keeps being retried
            assert not loops.done()
            await _until(lambda: "revocation-poll" in health.failing())
            assert not health.healthy  # what readiness reads
            assert health.failures_total["revocation-poll"] >= 3
            store.broken = False
            await _until(lambda: health.healthy)  # running again: ready again
            mended = store.polls
            await store.wait_polls(mended + 3)  # and still polling
        assert health.consecutive("revocation-poll") == 0
    finally:
        loops.cancel()
        await asyncio.gather(loops, return_exceptions=True)
        await store.close()


async def test_a_loop_that_returns_is_done_and_cancelling_ends_the_others() -> None:
    health = WriteHealth(threshold=1)
    returned = asyncio.Event()
    cancelled = asyncio.Event()

    async def finishes() -> None:
        returned.set()

    async def forever() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cancelled.set()

    loops = asyncio.create_task(
        run_loops({"finishes": finishes, "forever": forever}, health=health, backoff=FAST)
    )
    async with asyncio.timeout(WAIT):
        await returned.wait()
        assert not loops.done()
        loops.cancel()
        await asyncio.gather(loops, return_exceptions=True)
    assert cancelled.is_set()
    assert health.healthy and not health.failures_total


def test_one_backoff_doubles_to_its_cap_and_never_retries_at_once() -> None:
    backoff = Backoff(first=0.1, cap=5.0)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (7, 5.0), (40, 5.0)]:
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(failures) <= ceiling
