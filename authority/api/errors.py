"""Domain errors to gRPC status, in one table; anything unexpected becomes INTERNAL
with no details (the stack trace goes to the log, never to the caller)."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from authority.api.request_context import bind_rpc
from authority.domain.errors import AuthorityError, ErrorCode
from authority.observability import metrics

log = structlog.get_logger(__name__)

STATUS_BY_CODE: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.CONFLICT: grpc.StatusCode.ABORTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: AuthorityError) -> NoReturn:
    """End the call with ``error``'s status and safe message (and retry-after, if any)."""
    metrics.count_error(error)
    retry_after = getattr(error, "retry_after", None)
    # Keep what is already set (the interceptor's x-request-id): abort's trailing
    # metadata replaces it.
    kept = tuple(context.trailing_metadata() or ())
    trailing = (*kept, ("retry-after", str(math.ceil(retry_after)))) if retry_after else ()
    await context.abort(STATUS_BY_CODE[error.code], error.message, trailing)
    raise AssertionError("unreachable: abort raises")


def rpc(
    handler: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    """Wrap a servicer method so domain errors become statuses with their safe message."""
    return _guarded(handler, binds=True)


def query_rpc(
    handler: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Resp],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    """``rpc`` for a synchronous handler that writes no events (ext_authz Check: memory
    only, once per proxied request): one coroutine per call, not a wrapper awaiting the
    handler's own, and no binding of who and where (``bind_rpc``), which only outbox
    events read. The same statuses as ``rpc``."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return handler(self, request, context)
        except AuthorityError as error:
            await abort(context, error)
        except Exception:
            log.exception("rpc.internal_error", method=handler.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")

    return wrapper


def _guarded(
    handler: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
    *,
    binds: bool,
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        if binds:
            bind_rpc(context)  # who and where, for the outbox events this call writes
        try:
            return await handler(self, request, context)
        except AuthorityError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("rpc.internal_error", method=handler.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: abort raises")

    return wrapper
