"""The Redis half of the event pipeline, alone: CPU per event of publishing batches to
the stream (``RedisStreamSink.publish``) and reading them back in two consumer groups
(audit and webhooks, no-op handlers), in this process, with redis-py's pure-Python
reply parser and with hiredis's, rounds interleaved:
``python -m tools.bench.eventpipe [--events N] [--batch B] [--rounds R]``.

CPU time (``time.process_time``), not wall time: the machine is shared. hiredis must
be installed for its side; without it only the Python parser is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from redis._parsers import _AsyncRESP2Parser
from redis.utils import HIREDIS_AVAILABLE

from authority.domain.events import OutboxEntry, new_event
from authority.redis.events import RedisStreamSink

GROUPS = ("audit", "webhooks")


def _entries(count: int, start: int) -> list[OutboxEntry]:
    now = datetime.now(UTC)
    return [
        OutboxEntry(
            start + i,
            new_event(
                "session.refreshed",
                "session",
                os.urandom(16).hex(),
                at=now,
                data={"client_id": "bench-client", "principal": "bench-user", "generation": i},
            ),
        )
        for i in range(count)
    ]


async def _round(url: str, parser: type | None, events: int, batch: int) -> float:
    """CPU seconds per event of publishing ``events`` and consuming them in each group."""
    prefix = f"eventpipe-{os.urandom(4).hex()}"
    sink = RedisStreamSink(url, prefix=prefix, block=0.01, batch_size=batch)
    await sink.start()
    client = sink._redis()
    if parser is not None:
        client.connection_pool.connection_kwargs["parser_class"] = parser
    try:
        for group in GROUPS:
            await sink.ensure_group(group)
        batches = [_entries(batch, n) for n in range(0, events, batch)]
        seen = dict.fromkeys(GROUPS, 0)

        async def handler(_: Sequence[OutboxEntry]) -> None:
            return None

        started = time.process_time()
        for entries in batches:
            await sink.publish(entries)
            for group in GROUPS:
                seen[group] += await sink.consume_once(group, handler)
        for group in GROUPS:
            while seen[group] < events:
                seen[group] += await sink.consume_once(group, handler)
        return (time.process_time() - started) / events
    finally:
        await client.delete(sink.stream)
        await sink.close()


async def _main(url: str, events: int, batch: int, rounds: int, only: str | None) -> None:
    sides: dict[str, type | None] = {"python parser": _AsyncRESP2Parser}
    if HIREDIS_AVAILABLE:
        from redis._parsers import _AsyncHiredisParser  # noqa: PLC0415

        sides["hiredis"] = _AsyncHiredisParser
    if only is not None:
        sides = {only: sides[only]}
    results: dict[str, list[float]] = {name: [] for name in sides}
    await _round(url, None, batch * 4, batch)  # warm up
    for _ in range(rounds):
        for name, parser in sides.items():
            results[name].append(await _round(url, parser, events, batch))
    for name, values in results.items():
        shown = ", ".join(f"{v * 1e6:.1f}" for v in values)
        print(f"  {name:<14} {statistics.median(values) * 1e6:6.1f} us CPU/event  ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.eventpipe", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", choices=("python parser", "hiredis"), help="one side (e.g. under callgrind)"
    )
    args = parser.parse_args()
    asyncio.run(_main(args.redis_url, args.events, args.batch, args.rounds, args.only))


if __name__ == "__main__":
    main()
