"""Requests that cannot be decoded get INVALID_ARGUMENT, like any other bad input.

grpc.aio decodes a request before any handler or interceptor runs, and answers a
decoding failure (invalid UTF-8 in a proto3 string, a truncated field) with UNKNOWN and
the exception's class name, unlogged and uncounted. This interceptor swaps every
handler's deserializer for one that returns a sentinel instead of raising, and the
handler's behaviour for one that answers the sentinel with INVALID_ARGUMENT. Placed
after the logging interceptor, the call then gets its ``rpc`` line and metrics as
any other does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time

Context = grpc.aio.ServicerContext[Any, Any]


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


UNDECODABLE_MESSAGE: Final = "the request could not be decoded"


def _reason(error: Exception) -> str:
    """What was wrong, in protobuf's words but without Python class names."""
    text = str(error)
    if "UTF-8" in text:
        return "a string field is not valid UTF-8"
    return "it is not a valid protobuf message for this method"


def safe_deserializer(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # DecodeError, and whatever a parser may raise
            return _Undecodable(_reason(error))

    return decode


async def _refuse(request: _Undecodable, context: Context) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"{UNDECODABLE_MESSAGE}: {request.reason}"
    )


async def _items(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's answers: an async generator's items, or nothing from a
    coroutine that writes them itself (``context.write``, as grpc's Health.Watch does)."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


def _unary_request(behaviour: Callable[..., Any], streams: bool) -> Callable[..., Any]:
    if streams:

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(request, context)
            async for item in _items(behaviour(request, context)):
                yield item

        return stream

    async def unary(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(request, context)
        return await behaviour(request, context)

    return unary


def _stream_request(behaviour: Callable[..., Any], streams: bool) -> Callable[..., Any]:
    def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async def each() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    await _refuse(request, context)
                yield request

        return each()

    if streams:

        async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for item in _items(behaviour(checked(requests, context), context)):
                yield item

        return stream

    async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
        return await behaviour(checked(requests, context), context)

    return unary


def guard(handler: Handler) -> Handler:
    """``handler`` with decoding failures answered as INVALID_ARGUMENT."""
    deserializer = safe_deserializer(handler.request_deserializer)
    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary_request(handler.unary_unary, streams=False), deserializer, serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _unary_request(handler.unary_stream, streams=True), deserializer, serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _stream_request(handler.stream_unary, streams=False), deserializer, serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _stream_request(handler.stream_stream, streams=True), deserializer, serializer
        )
    return handler


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Applies ``guard`` to every handler of the server (cached per method)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        guarded = self._handlers[method] = guard(handler)
        return guarded
