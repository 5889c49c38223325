"""A server span per gRPC call (OpenTelemetry semantic conventions for RPC), its parent
taken from the caller's ``traceparent`` metadata.

Wrapped outermost around each method's call wrapper (``api.call_pipeline``): the span is
current while the rest runs, so the per-RPC ``rpc`` line carries the span's trace id,
and calls the wrapper refuses (undecodable requests, admin calls on the public
listener) are traced too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from authority.api.handler_wrapping import Handler, rewrap
from authority.observability.otel import Tracing
from authority.observability.rpc_line import status_of

# Server-side errors per the conventions; the others are the caller's (no error status).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# Probes and reflection: frequent, and nothing to learn from a trace of them.
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _finish(span: Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))


def traced(tracing: Tracing, method: str, handler: Handler) -> Handler:
    """``handler`` run inside a server span (probes and reflection are left as they are)."""
    if method.startswith(_UNTRACED):
        return handler
    return _wrap(tracing, method, handler)


def _wrap(tracing: Tracing, method: str, handler: Handler) -> Handler:
    tracer = tracing.tracer
    service, _, name = method.lstrip("/").rpartition("/")
    span_name = f"{service}/{name}"
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def parent(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = context.invocation_metadata() or ()
        return tracing.parent({k: v for k, v in metadata if isinstance(v, str)})

    def unary_response(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with tracer.start_as_current_span(
                span_name,
                context=parent(context),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,  # exceptions may quote what was sent
                set_status_on_exception=False,
            ) as span:
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except BaseException as error:
                    code = status_of(error)
                    raise
                finally:
                    _finish(span, code)

        return call

    def stream_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        # Not made current: a stream's generator may be finalised from another
        # context (a cancelled call), where the context could not be detached.
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span = tracer.start_span(
                span_name,
                context=parent(context),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            code = grpc.StatusCode.UNKNOWN
            try:
                result = behaviour(request, context)
                if hasattr(result, "aclose"):
                    async with contextlib.aclosing(result) as items:
                        async for item in items:
                            yield item
                elif hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
                code = context.code() or grpc.StatusCode.OK
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except BaseException as error:
                code = status_of(error)
                raise
            finally:
                _finish(span, code)
                span.end()

        return call

    return rewrap(handler, unary_response, stream_response)
