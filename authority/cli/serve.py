"""`authority serve`: run the server (or a supervisor of N workers) until a signal."""

from __future__ import annotations

import argparse
import asyncio

from authority.app import serve
from authority.config import Settings
from authority.observability.logging import configure_logging
from authority.supervisor import Supervisor


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers > 1:
        return Supervisor(settings, args.workers).run()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    asyncio.run(serve(settings))
    return 0
