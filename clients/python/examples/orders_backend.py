"""An example backend protected by the authority in one line.

    ORDERS_CLIENT_SECRET=cs_... python clients/python/examples/orders_backend.py \\
        --authority 127.0.0.1:50051 --jwks-url http://127.0.0.1:8080/.well-known/jwks.json \\
        --client-id orders-backend

Following revocations needs a credential: the backend's own client at the authority
(client credentials, scope ``authority:revocations.read``), created once with
``authority clients create orders-backend --grant client_credentials
--scope authority:revocations.read --default-scope authority:revocations.read``; its secret
comes from the environment, never the command line.

A tiny ``example.orders.v1.Orders`` service with no .proto of its own: generic handlers
whose messages are ``google.protobuf.Struct`` (a well-known type every gRPC client has).
``ListOrders`` needs the ``orders:read`` scope, ``CreateOrder`` needs ``orders:write``,
both for audience ``orders``; handlers read who is calling with ``current_claims()``.

Call it (with a token whose ``aud`` includes ``orders``)::

    channel.unary_unary("/example.orders.v1.Orders/CreateOrder",
        request_serializer=Struct.SerializeToString, response_deserializer=Struct.FromString,
    )(Struct(...), metadata=[("authorization", f"Bearer {token}")])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import urllib.parse
from typing import Any

import grpc
from authority_client import (
    AuthorityInterceptor,
    ClientCredentialsTokens,
    LocalVerifier,
    Require,
    current_claims,
)
from google.protobuf.struct_pb2 import Struct

SERVICE = "example.orders.v1.Orders"
SECRET_ENV = "ORDERS_CLIENT_SECRET"


class Orders:
    """In-memory orders, per subject: the handler trusts only the verified ``sub``."""

    def __init__(self) -> None:
        self._orders: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    async def list_orders(
        self, request: Struct, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Struct:
        claims = current_claims()
        answer = Struct()
        answer.update({"subject": claims.subject, "orders": self._orders.get(claims.subject, [])})
        return answer

    async def create_order(
        self, request: Struct, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Struct:
        claims = current_claims()
        item = request.fields.get("item")
        order = {
            "id": f"o_{next(self._ids)}",
            "item": item.string_value if item is not None else "",
            "placed_by": claims.subject,
            "client_id": claims.client_id,
        }
        self._orders.setdefault(claims.subject, []).append(order)
        answer = Struct()
        answer.update(order)
        return answer


def handlers(orders: Orders) -> grpc.GenericRpcHandler:
    def method(behaviour: Any) -> grpc.RpcMethodHandler[Struct, Struct]:
        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=Struct.FromString,
            response_serializer=Struct.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {"ListOrders": method(orders.list_orders), "CreateOrder": method(orders.create_order)},
    )


def default_issuer(jwks_url: str) -> str:
    """The authority's default issuer is its HTTP origin, where the JWKS is served too."""
    parts = urllib.parse.urlsplit(jwks_url)
    return f"{parts.scheme}://{parts.netloc}"


async def serve(args: argparse.Namespace) -> None:
    credential = None
    if args.revocations != "none":
        secret = os.environ.get(SECRET_ENV, "")
        if not args.client_id or not secret:
            raise SystemExit(f"--client-id and ${SECRET_ENV} are needed to read revocations")
        credential = ClientCredentialsTokens(args.authority, args.client_id, secret)
    verifier = LocalVerifier.for_authority(
        args.authority,
        jwks_url=args.jwks_url,
        issuer=args.issuer or default_issuer(args.jwks_url),
        audience=args.audience,
        revocations=args.revocations,
        credential=credential,
    )
    await verifier.start()
    # The one line that protects the server:
    server = grpc.aio.server(
        interceptors=[
            AuthorityInterceptor(
                verifier,
                requirements={
                    f"/{SERVICE}/ListOrders": Require(scopes={"orders:read"}),
                    f"/{SERVICE}/CreateOrder": Require(scopes={"orders:write"}),
                },
            )
        ]
    )
    server.add_generic_rpc_handlers((handlers(Orders()),))
    port = server.add_insecure_port(args.listen)
    await server.start()
    host = args.listen.rpartition(":")[0]
    print(f"orders backend listening on {host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2)
    await verifier.aclose()
    if credential is not None:
        await credential.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authority", required=True, help="the authority's gRPC address")
    parser.add_argument("--jwks-url", required=True, help="the authority's JWKS URL")
    parser.add_argument("--issuer", default="", help="default: the JWKS URL's origin")
    parser.add_argument("--audience", default="orders", help="the audience tokens must name")
    parser.add_argument("--listen", default="127.0.0.1:50052", help="host:port (port 0: any)")
    parser.add_argument(
        "--client-id",
        default="",
        help=f"this backend's client id, to read revocations (its secret: ${SECRET_ENV})",
    )
    parser.add_argument(
        "--revocations",
        choices=("callback", "watch", "none"),
        default="watch",
        help="follow the revocation stream (default), ask per token, or skip revocation",
    )
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
