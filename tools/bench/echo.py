"""The echo RPC: a bare handler taking Verify's request, served next to the authority
(part 1, in process) and by the bare server (``tools.bench.bare``, the floor)."""

from __future__ import annotations

from typing import Any

import grpc

from authority.v1 import token_pb2

ECHO_SERVICE = "bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


async def _echo(
    request: token_pb2.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> token_pb2.VerifyResponse:
    """Deserialise the same request as Verify and answer with a message of similar size."""
    return token_pb2.VerifyResponse(detail=request.token)


def echo_handler() -> grpc.GenericRpcHandler:
    """The bare RPC that Verify is measured against."""
    return grpc.method_handlers_generic_handler(
        ECHO_SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                _echo,
                request_deserializer=token_pb2.VerifyRequest.FromString,
                response_serializer=token_pb2.VerifyResponse.SerializeToString,
            )
        },
    )
