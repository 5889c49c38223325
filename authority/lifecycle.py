"""Stopping that always finishes: every step bounded, every task cancelled and awaited.

A stop step that does not finish in time is abandoned (cancelled) and reported with
the stacks of every task still pending, so the process still exits and the log says
what held it. Nothing here uses ``asyncio.wait_for`` on a result that may arrive as
the cancellation does: on Python 3.11 that swallows the cancellation (gh-86296), which
is how a cancelled loop could keep running and hold the stop forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# How often a task that ignores cancellation is cancelled again before being abandoned.
_CANCEL_ROUNDS = 3


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for ``event`` at most ``seconds`` (None: no limit); True if it was set.

    Unlike ``wait_for(event.wait(), timeout)`` on 3.11, a cancellation that arrives as
    the event is set is never swallowed (no inner task: the caller awaits directly)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """Where ``task`` waits, outermost first: its chain of awaited coroutines (a suspended
    task's ``get_stack`` shows only the outermost frame)."""
    chain: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(chain) < 16:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is None:
            chain.append(type(awaited).__name__)  # a future, or a C-level awaitable
            break
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        line = f":{frame.f_lineno}" if frame is not None else ""
        chain.append(f"{code.co_name} ({code.co_filename.rsplit('/', 2)[-1]}{line})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain


def _stack(task: asyncio.Task[Any]) -> str:
    return f"{task.get_name()}: {' -> '.join(awaiting(task)) or 'not started'}"


def pending_tasks() -> list[str]:
    """Every unfinished task of the running loop but the caller, with where it waits."""
    current = asyncio.current_task()
    return sorted(_stack(t) for t in asyncio.all_tasks() if t is not current and not t.done())


async def bounded(step: str, awaitable: Awaitable[Any], seconds: float) -> bool:
    """Run one stop step for at most ``seconds``; True if it finished.

    Overrunning is logged (``authority.stop_overran``, with the pending tasks) and the
    step is cancelled; its errors are logged, never raised: the next steps must run."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.error("authority.stop_overran", step=step, after_seconds=seconds, tasks=pending_tasks())
        await cancel_all([task], within=1.0)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.error("authority.stop_step_failed", step=step, exc_info=task.exception())
    return True


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], *, within: float) -> None:
    """Cancel ``tasks`` and wait for them; a task that survives a cancellation (one that
    swallowed it) is cancelled again, and after a few rounds abandoned and reported."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for round_ in range(_CANCEL_ROUNDS):
        if not pending:
            break
        if round_:
            log.warning("authority.tasks_slow_to_cancel", tasks=[_stack(t) for t in pending])
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=within / _CANCEL_ROUNDS)
    if pending:
        log.error("authority.tasks_abandoned", tasks=[_stack(t) for t in pending])
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                if task.exception() is not None:
                    log.error(
                        "authority.task_failed", task=task.get_name(), exc_info=task.exception()
                    )
