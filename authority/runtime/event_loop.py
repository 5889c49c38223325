"""The event loop a server runs on: uvloop where it is installed (the default), else asyncio's.

Why uvloop: most of what grpc.aio does per call is event-loop work (a task per call,
futures and callbacks woken by its completion-queue poller), and uvloop does that work
in C. Measured on one pinned core with h2load (``make bench``, part 0): a bare grpc.aio
Health server answers 6-13% more calls per second on uvloop than on asyncio's loop
(it varies by run), and ours gained more (Health/Check from 0.88x to 0.94-1.0x of the
bare server on asyncio). ``AUTHORITY_EVENT_LOOP=asyncio`` keeps asyncio's loop (the tests run
in-process servers on it, so both loops are covered); ``uvloop`` insists on uvloop and
refuses to start without it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from authority.config import ConfigError

T = TypeVar("T")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """What makes the loop for ``choice`` (None: asyncio's own); ConfigError when
    ``uvloop`` is asked for and cannot be imported."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(
                "AUTHORITY_EVENT_LOOP=uvloop, but uvloop cannot be imported"
                f" ({exc}); install it or set AUTHORITY_EVENT_LOOP=asyncio"
            ) from exc
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: say so quietly, not as a RuntimeWarning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Which loop ``loop`` is ("uvloop" or "asyncio"), for the ready line."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"
