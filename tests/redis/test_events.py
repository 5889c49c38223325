"""The Redis stream sink against a real Redis: batches go in whole and in order, a
consumer group shares the work between replicas, and entries a consumer read but never
acknowledged are taken over by another (XAUTOCLAIM) once stale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from authority.domain.events import PRINCIPAL, OutboxEntry, new_event
from authority.redis.events import RedisStreamSink

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)


def entries(count: int, start: int = 1) -> list[OutboxEntry]:
    return [
        OutboxEntry(i, new_event("login.failed", PRINCIPAL, f"p-{i}", at=T0, data={"n": i}))
        for i in range(start, start + count)
    ]


@pytest.fixture
async def make_sink(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    made: list[RedisStreamSink] = []

    async def make(**kwargs: Any) -> RedisStreamSink:
        sink = RedisStreamSink(redis_url, prefix=prefix, block=0.05, **kwargs)
        await sink.start()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


async def test_published_batches_are_read_back_in_order(
    make_sink: Callable[..., Any], raw_redis: Redis
) -> None:
    sink = await make_sink(consumer="a")
    await sink.ensure_group("audit")
    await sink.publish(entries(5))
    await sink.publish(entries(3, start=6))
    seen: list[OutboxEntry] = []

    async def handler(batch: Sequence[OutboxEntry]) -> None:
        seen.extend(batch)

    while await sink.consume_once("audit", handler):
        pass
    assert [e.sequence for e in seen] == list(range(1, 9))
    assert seen[0].event.data == {"n": 1} and seen[0].event.occurred_at == T0
    pending = await raw_redis.xpending(sink.stream, "audit")
    assert pending["pending"] == 0


async def test_the_stream_is_bounded(make_sink: Callable[..., Any], raw_redis: Redis) -> None:
    sink = await make_sink(max_length=10)
    for start in range(1, 500, 100):
        await sink.publish(entries(100, start=start))
    assert await raw_redis.xlen(sink.stream) < 500


async def test_a_group_shares_the_work_and_takes_over_stale_entries(
    make_sink: Callable[..., Any],
) -> None:
    crashed = await make_sink(consumer="crashed", claim_idle=1.0, batch_size=4)
    healthy = await make_sink(consumer="healthy", claim_idle=1.0, batch_size=4)
    await crashed.ensure_group("audit")
    await crashed.publish(entries(12))

    async def crash(batch: Sequence[OutboxEntry]) -> None:
        raise RuntimeError("the consumer died before acknowledging")

    with pytest.raises(RuntimeError):
        await crashed.consume_once("audit", crash)  # read 1-4, never acknowledged

    seen: list[int] = []

    async def handler(batch: Sequence[OutboxEntry]) -> None:
        seen.extend(e.sequence for e in batch)

    async with asyncio.timeout(5):
        while len(set(seen)) < 12:
            await healthy.consume_once("audit", handler)
    assert sorted(set(seen)) == list(range(1, 13))
    assert seen[:4] != [1, 2, 3, 4]  # new entries first; the stale ones only after 1 s


async def test_a_handled_batch_is_acknowledged_with_the_next_read_or_on_close(
    make_sink: Callable[..., Any], raw_redis: Redis
) -> None:
    """The XACK rides with the next command: entries stay pending until then, a failed
    batch is never acknowledged, and ``close`` sends what is left."""
    sink = await make_sink(consumer="a", batch_size=3)
    await sink.ensure_group("audit")
    await sink.publish(entries(6))
    seen: list[int] = []

    async def handler(batch: Sequence[OutboxEntry]) -> None:
        seen.extend(e.sequence for e in batch)

    async def fail(batch: Sequence[OutboxEntry]) -> None:
        raise RuntimeError("not handled")

    async def pending() -> int:
        return int((await raw_redis.xpending(sink.stream, "audit"))["pending"])

    assert await sink.consume_once("audit", handler) == 3
    assert await pending() == 3  # handled, acknowledged with the next read
    with pytest.raises(RuntimeError):
        await sink.consume_once("audit", fail)  # acknowledges 1-3, reads 4-6, fails
    assert await pending() == 3
    assert seen == [1, 2, 3]
    await sink.publish(entries(2, start=7))
    assert await sink.consume_once("audit", handler) == 2  # 7-8; 4-6 are not stale yet
    await sink.close()
    assert await pending() == 3  # 4-6 only: the failed batch waits to be claimed again
    detail = await raw_redis.xpending_range(sink.stream, "audit", "-", "+", 10)
    assert len(detail) == 3
