"""structlog set-up: JSON lines for machines, a console renderer for people."""

from __future__ import annotations

import contextlib
import logging
import sys

import structlog


class _Stdout:
    """stdout that drops lines it cannot write: a worker whose supervisor died (its
    stdout a broken pipe) must still be able to log its way through a clean shutdown."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except (BrokenPipeError, OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            sys.stdout.flush()


def configure_logging(*, fmt: str = "json", level: str = "info") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(_Stdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # asyncpg logs every failed reconnection with a traceback while PostgreSQL is down;
    # readiness and our own Unavailable answers already say so, once.
    logging.getLogger("asyncpg").setLevel(logging.ERROR)
