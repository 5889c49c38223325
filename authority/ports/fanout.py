"""Telling every process about revocations and key-ring changes.

The durable record is always the store; the fan-out only makes other processes
learn faster (milliseconds instead of a poll interval), and its cache lets a
process rebuild its revocation view without reading the whole store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from authority.domain.revocation import Revocation

OnRevocation = Callable[[Revocation], None]
OnEvent = Callable[[], Awaitable[None]]


class Fanout(Protocol):
    @property
    def healthy(self) -> bool:
        """False while the bus is unreachable (readiness reports degraded)."""
        ...

    async def dropped(self) -> None:
        """Return as soon as ``healthy`` is False (at once if it is now), so that the store
        poll, which sleeps long while the fan-out carries everything, steps in without
        waiting out its sleep."""
        ...

    async def start(self) -> None:
        """Connect. Never raises for an unreachable bus: ``healthy`` says so, ``listen`` retries."""
        ...

    async def close(self) -> None:
        """Idempotent."""
        ...

    async def publish_revocation(self, revocation: Revocation) -> None:
        """Cache it until it expires and tell every subscriber. Raises Unavailable when the
        bus is down (the caller has already made it durable; other processes will poll)."""
        ...

    async def publish_key_ring_changed(self) -> None:
        """Tell every subscriber to reload the key ring. Raises Unavailable when down."""
        ...

    async def live_revocations(self) -> list[Revocation]:
        """Every cached, unexpired revocation. Raises Unavailable when down."""
        ...

    async def listen(
        self,
        *,
        on_revocation: OnRevocation,
        on_key_ring_changed: OnEvent,
        on_connected: OnEvent,
    ) -> None:
        """Deliver messages until cancelled, reconnecting with backoff. ``on_connected`` runs
        after every (re)connection, before messages, so the caller can resynchronise what it
        may have missed while disconnected."""
        ...


class LocalFanout:
    """One process: nothing to tell anyone. Processes sharing an embedded store (workers)
    learn of each other's revocations by polling the store."""

    @property
    def healthy(self) -> bool:
        return True

    async def dropped(self) -> None:
        """Never: there is nothing to lose."""
        await asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish_revocation(self, revocation: Revocation) -> None:
        return None

    async def publish_key_ring_changed(self) -> None:
        return None

    async def live_revocations(self) -> list[Revocation]:
        return []

    async def listen(
        self,
        *,
        on_revocation: OnRevocation,
        on_key_ring_changed: OnEvent,
        on_connected: OnEvent,
    ) -> None:
        return None
