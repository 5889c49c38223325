"""The OpenTelemetry side of tracing (the ``otel`` extra; imported only when tracing is
on, see ``authority.observability.tracing``).

One ``Tracing`` per process, injected where spans are made (the gRPC interceptor, the
HTTP middleware, the store and Redis wrappers): no global tracer provider is installed,
so two servers in one test process each keep their own. Server spans take their parent
from a W3C ``traceparent``; child spans (store, Redis) are made only inside a recording
span, so background loops never start traces of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from structlog.typing import EventDict, WrappedLogger

from authority.config import ConfigError

DEFAULT_SERVICE_NAME = "authority"
_PROPAGATED = ("traceparent", "tracestate")
_SUPPORTED_PROTOCOL = "http/protobuf"

T = TypeVar("T")


class Tracing:
    """A tracer and the W3C trace-context propagator. ``shutdown`` flushes what the
    batch processor still holds (bounded by the caller)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("authority")
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_environment(cls) -> Tracing:
        """Exporters, batching, sampling and resource from the standard ``OTEL_*``
        variables (the SDK reads them); ``service.name`` defaults to "authority"."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # see shutdown
        for processor in _processors(os.environ):
            provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def with_processor(cls, processor: SpanProcessor) -> Tracing:
        """Spans to ``processor`` (tests: an in-memory exporter)."""
        provider = TracerProvider(
            resource=Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}), shutdown_on_exit=False
        )
        provider.add_span_processor(processor)
        return cls(provider)

    def parent(self, headers: Mapping[str, str]) -> Context:
        """The remote parent named by ``traceparent`` (and ``tracestate``) in ``headers``
        (lower-case names); an empty context, so a new trace, when there is none."""
        carrier = {name: headers[name] for name in _PROPAGATED if name in headers}
        return self._propagator.extract(carrier) if carrier else Context()

    async def child(
        self, name: str, attributes: Mapping[str, AttributeValue], call: Callable[[], Awaitable[T]]
    ) -> T:
        """``await call()`` in a client span ``name``, inside a recording span only."""
        if not trace.get_current_span().is_recording():
            return await call()
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            return await call()

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[None]:
        """A client span ``name`` around the block, inside a recording span only."""
        if not trace.get_current_span().is_recording():
            yield
            return
        with self.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            yield

    async def shutdown(self) -> None:
        """Export what is buffered, then stop. The export blocks (up to the exporter's
        timeout when the collector is away), so it runs in a daemon thread: the caller
        bounds the wait, and an unreachable collector never holds the process's exit."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def run() -> None:
            try:
                self.provider.shutdown()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                    loop.call_soon_threadsafe(finished)

        threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
        await done


def _processors(environ: Mapping[str, str]) -> Iterable[SpanProcessor]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    exporters: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "otlp":
            exporters.append(_otlp(environ))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ConfigError(
                f"invalid configuration:\n  OTEL_TRACES_EXPORTER: {name!r} is not supported"
                " (use otlp, console or none)"
            )
    return [BatchSpanProcessor(exporter) for exporter in exporters]


def _otlp(environ: Mapping[str, str]) -> SpanExporter:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "").strip()
        if protocol:
            if protocol != _SUPPORTED_PROTOCOL:
                raise ConfigError(
                    f"invalid configuration:\n  {variable}: {protocol!r} is not supported"
                    f" (authority exports OTLP over HTTP: {_SUPPORTED_PROTOCOL})"
                )
            break
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_*


def add_trace_ids(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The structlog processor: a line logged inside a span names its trace and span
    (the per-RPC ``rpc`` line is logged inside the server span: request id and trace id
    on one line)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict
