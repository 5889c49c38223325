"""A server span per HTTP request (OpenTelemetry semantic conventions for HTTP), its parent
taken from the caller's ``traceparent`` header. Outermost of the application's
middlewares, so that the OAuth endpoints' ``rpc`` line is logged inside the span."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import SpanKind, Status, StatusCode

from authority.observability.otel import Tracing

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
# Probes and scrapes: frequent, and nothing to learn from a trace of them.
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def middleware(tracing: Tracing) -> Middleware:
    tracer = tracing.tracer

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _UNTRACED:
            return await handler(request)
        method = request.method if request.method in _METHODS else "_OTHER"
        # The route's template, never the raw path: bounded names, nothing sent echoed.
        route = request.match_info.route.resource
        template = route.canonical if route is not None else None
        attributes = {
            "http.request.method": method,
            "url.scheme": request.scheme,
            "url.path": request.path,
        }
        if template:
            attributes["http.route"] = template
        with tracer.start_as_current_span(
            f"{method} {template}" if template else method,
            context=tracing.parent({k.lower(): v for k, v in request.headers.items()}),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # exceptions may quote what was sent
            set_status_on_exception=False,
        ) as span:
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))

    return traced
