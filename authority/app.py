"""The server's entry points: ``Authority`` (see ``authority.runtime``) and ``serve``."""

from __future__ import annotations

import asyncio
import signal

from authority.config import Settings
from authority.observability import logging as observability_logging
from authority.runtime.background import LIVENESS, READINESS
from authority.runtime.runtime import Authority, Ports

__all__ = ["LIVENESS", "READINESS", "Authority", "Ports", "serve"]


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    # The full configuration, with the redaction processor, before anything logs.
    observability_logging.configure_logging(fmt=settings.log_format, level=settings.log_level)
    authority = Authority(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await authority.start()
        await stop.wait()
    finally:
        await authority.stop()
