"""structlog set-up: one entry point, shared by the CLI, the server and the benchmark.

The configuration itself (JSON or console rendering, the redaction processor, stdout
that survives a broken pipe) lives in ``authority.observability.logging``.
"""

from __future__ import annotations

from authority.observability.logging import configure_logging

__all__ = ["configure_logging"]
