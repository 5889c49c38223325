"""`authority serve`: run the server (or a supervisor of N workers) until a signal."""

from __future__ import annotations

import argparse
import dataclasses
import os

from authority.app import serve
from authority.config import Settings
from authority.observability.logging import configure_logging
from authority.runtime import event_loop
from authority.supervisor import Supervisor


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.init:
        # Workers (--workers) read their settings from the environment.
        os.environ["AUTHORITY_ALLOW_FRESH_INSTALL"] = "true"
        settings = dataclasses.replace(settings, allow_fresh_install=True)
    if args.workers > 1:
        return Supervisor(settings, args.workers).run()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    event_loop.run(serve(settings), settings.event_loop)
    return 0
