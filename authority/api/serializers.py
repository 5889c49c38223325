"""Per-method response serializers for the generated ``add_*_to_server`` functions.

A remembered answer (Verify or ext_authz Check of a repeated token) is the same message
on every call, so its method's serializer can send the bytes made once instead of
serializing the message again. The generated registration always takes the message
class's ``SerializeToString``: ``ServerWithSerializers`` stands in for the server while a
servicer registers, and gives the named methods their own serializer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time

Serializer = Callable[[Any], bytes]


def with_serializer(handler: Handler | None, serializer: Serializer | None) -> Handler | None:
    """``handler`` (unary-unary) answering through ``serializer``; others as they are."""
    if handler is None or serializer is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary, handler.request_deserializer, serializer
    )


class _Generic(grpc.GenericRpcHandler):
    """A generic handler whose named methods come out with their own serializer."""

    def __init__(self, inner: grpc.GenericRpcHandler, serializers: Mapping[str, Serializer]):
        self._inner = inner
        self._serializers = serializers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        return with_serializer(handler, self._serializers.get(handler_call_details.method))


class ServerWithSerializers:
    """What ``add_*_to_server`` registers on: ``server``, except that the methods named in
    ``serializers`` (full names, "/package.Service/Method") answer through theirs."""

    def __init__(self, server: Any, serializers: Mapping[str, Serializer]) -> None:
        self._server = server
        self._serializers = dict(serializers)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_Generic(handler, self._serializers) for handler in handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Handler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: with_serializer(handler, self._serializers.get(f"/{service_name}/{name}"))
                for name, handler in method_handlers.items()
            },
        )
