"""Background loops, supervised: none is ever silently dead.

Every loop of the process runs under one ``asyncio.TaskGroup`` (``run_loops``), each
through ``supervised``: a loop that raises is logged (``loop.crashed``, with its
consecutive failures) and started again after the process's one backoff; its
consecutive failures are counted in a ``WriteHealth`` tracker under the loop's name,
which readiness and /metrics read. A loop that has run ``settle`` seconds since its
last start counts as recovered. A loop that returns (the fan-out's, once closed) is
done. Cancelling ``run_loops`` cancels every loop; ``authority.lifecycle.cancel_all``
bounds how long that may take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from authority.domain.backoff import RECONNECT, Backoff
from authority.domain.write_health import WriteHealth

log = structlog.get_logger(__name__)

Loop = Callable[[], Awaitable[None]]

# Longer than any backoff: a loop that has run this long since its start has recovered.
SETTLE_SECONDS = 10.0


async def supervised(
    name: str,
    loop: Loop,
    *,
    health: WriteHealth,
    backoff: Backoff = RECONNECT,
    settle: float = SETTLE_SECONDS,
) -> None:
    """Run ``loop()`` until it returns or this is cancelled; restart it when it raises."""
    running = asyncio.get_running_loop()
    while True:
        recovered = running.call_later(settle, health.record, name, True)
        try:
            await loop()
            return
        except Exception:
            health.record(name, False)
            failures = health.consecutive(name)
            delay = backoff.delay(failures)
            log.exception(
                "loop.crashed",
                loop=name,
                consecutive_failures=failures,
                restart_in_seconds=round(delay, 3),
            )
        finally:
            recovered.cancel()
        await asyncio.sleep(delay)


async def run_loops(
    loops: Mapping[str, Loop],
    *,
    health: WriteHealth,
    backoff: Backoff = RECONNECT,
    settle: float = SETTLE_SECONDS,
) -> None:
    """Every loop of ``loops`` under one task group, each ``supervised``; returns when all
    have returned, and cancels all when cancelled."""
    async with asyncio.TaskGroup() as group:
        for name, loop in loops.items():
            group.create_task(
                supervised(name, loop, health=health, backoff=backoff, settle=settle), name=name
            )
