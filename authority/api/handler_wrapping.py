"""Wrap every method handler of a server once, when it is registered, not on every call.

grpc.aio runs each server interceptor's ``intercept_service`` coroutine on every call,
even when the interceptor only hands back a handler it wrapped before. A ``Registrar``
stands in for the server while the servicers register: each handler they register is
wrapped once (``Wrap``), and the server itself runs with no interceptors, so a call
costs a dictionary lookup to find its (already wrapped) handler.

Every method lands in one table that the server sees as a single generic handler, none
as a "registered method": grpc.aio keeps one pending request per registered method and
waits on all of them (``asyncio.wait``) for every call it accepts, so each of our ~30
methods would add a task to that wait on every call of any method (measured: a quarter
of the gap between our Health/Check and a bare server's). With the table, the server
waits on one pending request, and finding a handler is one dictionary lookup.

Finding the handler also hands the call's metadata to it (``call_metadata``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time

# (full method name "/package.Service/Method", its handler) -> the handler to serve.
Wrap = Callable[[str, Handler], Handler]
Behaviour = Callable[..., Any]

# The call's metadata as grpc.aio converted it to look the handler up
# (``HandlerCallDetails.invocation_metadata``), for the call wrapper: converting it again
# (``context.invocation_metadata()``: a tuple of freshly decoded strings) was a visible
# part of every call's cost. grpc.aio runs each call, the lookup included, in a task of
# its own, so what the lookup sets here is that call's and is seen by nothing else.
call_metadata: ContextVar[tuple[tuple[str, Any], ...] | None] = ContextVar(
    "authority_call_metadata", default=None
)
_set_metadata = call_metadata.set


def rewrap(
    handler: Handler,
    unary_response: Callable[[Behaviour], Behaviour],
    stream_response: Callable[[Behaviour], Behaviour],
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """The same handler, its behaviour wrapped by the wrapper for its response arity
    (and its deserializer replaced, when one is given)."""
    deserializer = request_deserializer or handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(handler.unary_unary), deserializer, serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary), deserializer, serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_response(handler.unary_stream), deserializer, serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            stream_response(handler.stream_stream), deserializer, serializer
        )
    return handler


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose handlers come out wrapped (once per method, then cached)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            wrapped = None if handler is None else self._wrap(method, handler)
            if wrapped is None:  # an unknown method is not remembered (callers choose it)
                return None
            self._wrapped[method] = wrapped
        _set_metadata(handler_call_details.invocation_metadata)
        return wrapped


class _MethodTable(grpc.GenericRpcHandler):
    """The wrapped handlers of every method registered by name, looked up by the full
    method name."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self.handlers.get(handler_call_details.method)
        if handler is not None:
            _set_metadata(handler_call_details.invocation_metadata)
        return handler


class Registrar:
    """What the ``add_*_to_server`` functions register on, in place of the server: the
    handlers reach ``server`` wrapped by ``wrap``, those registered by name in one
    table (consulted first), the generic ones after it in the order they came."""

    def __init__(self, server: grpc.aio.Server, wrap: Wrap) -> None:
        self._server = server
        self._wrap = wrap
        self._table = _MethodTable()
        server.add_generic_rpc_handlers((self._table,))

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGeneric(handler, self._wrap) for handler in handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        for name, handler in method_handlers.items():
            method = f"/{service_name}/{name}"
            if method in self._table.handlers:
                raise RuntimeError(f"{method} is registered twice")
            self._table.handlers[method] = self._wrap(method, handler)
