"""Whether to trace: the standard ``OTEL_*`` variables decide, and nothing here imports
OpenTelemetry, so a server without the ``otel`` extra runs exactly as before.

Tracing is on when an exporter is asked for (``OTEL_TRACES_EXPORTER``, or an OTLP
endpoint: ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
``OTEL_SDK_DISABLED`` is not ``true``. When it is off, no interceptor, middleware or
wrapper is installed: the hot path is the one without tracing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
from structlog.typing import Processor

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

log = structlog.get_logger(__name__)

EXTRA_HINT = "install the otel extra: pip install 'authority[otel]'"


def wanted(environ: Mapping[str, str]) -> bool:
    """What the ``OTEL_*`` variables in ``environ`` ask for (no import, no I/O)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def _available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401, PLC0415 - the optional extra
    except ImportError:
        return False
    return True


def from_environment(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The process's tracing as ``OTEL_*`` configure it, or None when it is off. Asked
    for without the extra installed, it says so once and stays off (platforms often set
    ``OTEL_*`` for every container: that must not stop the server)."""
    if not wanted(os.environ if environ is None else environ):
        return None
    if not _available():
        log.warning("tracing.unavailable", hint=EXTRA_HINT)
        return None
    from authority.observability.otel import Tracing  # noqa: PLC0415 - the optional extra

    return Tracing.from_environment()


def log_processors(environ: Mapping[str, str] | None = None) -> list[Processor]:
    """The log processor that puts ``trace_id``/``span_id`` on lines logged inside a
    span, when tracing is wanted and installed; nothing otherwise."""
    if not wanted(os.environ if environ is None else environ) or not _available():
        return []
    from authority.observability.otel import add_trace_ids  # noqa: PLC0415 - optional

    return [add_trace_ids]
