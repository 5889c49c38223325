"""Requests that cannot be decoded get INVALID_ARGUMENT, like any other bad input.

grpc.aio decodes a request before any handler runs, and answers a decoding failure
(invalid UTF-8 in a proto3 string, a truncated field) with UNKNOWN and the exception's
class name, unlogged and uncounted. The call wrapper (``api.call_pipeline``) swaps every
handler's deserializer for ``safe_deserializer``, which returns an ``Undecodable`` instead
of raising, and answers one with INVALID_ARGUMENT (``refuse``) inside the call, which
then gets its ``rpc`` line and metrics as any other does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc

Context = grpc.aio.ServicerContext[Any, Any]


class Undecodable:
    """What a request that could not be decoded is handed to the handler as."""

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
            return Undecodable(_reason(error))

    return decode


async def refuse(request: Undecodable, context: Context) -> None:
    """End the call: INVALID_ARGUMENT, saying what was wrong (raises AbortError)."""
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"{UNDECODABLE_MESSAGE}: {request.reason}"
    )


def checked_requests(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    """A request stream that refuses the call at its first undecodable message."""

    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            yield request

    return each()
