"""The process's background loops, by name, and the readiness they keep current.

The runtime runs them under one task group (``authority.loops.run_loops``); the name of
each is the one readiness and /metrics report its crashes under.
"""

from __future__ import annotations

import asyncio

import structlog
from grpc_health.v1 import health_pb2

from authority.domain.errors import Unavailable
from authority.loops import Loop
from authority.runtime.build import Components
from authority.services.outbox import AUDIT_GROUP
from authority.services.webhooks import WEBHOOK_GROUP

log = structlog.get_logger(__name__)

# Health service names: liveness says the process runs; readiness says it can do its job
# (storage reachable and, in production, the fan-out connected).
LIVENESS = "liveness"
READINESS = "readiness"
READINESS_INTERVAL = 1.0


def background_loops(c: Components) -> dict[str, Loop]:
    """Every loop of the process, by name (the name readiness and metrics report)."""
    base, keys, revocations = c.base, c.keys, c.revocation_service
    outbox, fanout = base.outbox, base.backends.fanout

    async def key_ring_changed() -> None:
        await keys.reload()

    async def fanout_connected() -> None:
        """(Re)connected to the fan-out: catch up on whatever was missed meanwhile."""
        await revocations.resync()
        await keys.reload()

    return {
        "key-rotation": keys.run,
        "audit-consumer": lambda: outbox.consume(AUDIT_GROUP, base.audit),
        "webhook-consumer": lambda: outbox.consume(WEBHOOK_GROUP, c.webhooks),
        "outbox-relay": outbox.run,
        "revocation-expiry": revocations.run,
        "revocation-poll": revocations.run_poll,
        "fanout": lambda: fanout.listen(
            on_revocation=revocations.received,
            on_key_ring_changed=key_ring_changed,
            on_connected=fanout_connected,
        ),
        "readiness": lambda: watch_readiness(c),
    }


async def check_ready(c: Components) -> bool:
    """Storage answers and takes writes, no background loop keeps crashing, a key signs,
    and, in production, the fan-out is connected."""
    base = c.base
    if not (base.write_health.healthy and base.loop_health.healthy):
        return False
    try:
        async with asyncio.timeout(2.0):
            await base.store.key_ring_generation()
    except (Unavailable, TimeoutError):
        return False
    return c.keys.snapshot().signer is not None and base.backends.fanout.healthy


async def watch_readiness(c: Components) -> None:
    """Readiness follows the dependencies; liveness stays SERVING while we run."""
    base = c.base
    ready = True
    while True:
        await asyncio.sleep(READINESS_INTERVAL)
        now_ready = await check_ready(c)
        if now_ready != ready:
            ready = now_ready
            base.state.ready = ready
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await base.health.set(READINESS, status)
            log.warning(
                "readiness.changed",
                ready=ready,
                mode=base.backends.mode,
                failing_writes=base.write_health.failing(),
                failing_loops=base.loop_health.failing(),
            )
