"""The listeners: gRPC servers over the built servicers, HTTP sites on pre-bound sockets.

The HTTP listeners are bound before the components are built (``GuardedListener.bind``):
the issuer names the HTTP port actually bound, and the verifier and the minter are built
with the issuer. gRPC binds by address when its server starts; nothing depends on its
port but the ``authority.ready`` line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc

from authority.api import ext_authz, reflection, token_service
from authority.api.call_pipeline import CallPipeline
from authority.api.handler_wrapping import Registrar
from authority.config import Settings, parse_address
from authority.connection_limits import grpc_connection_options
from authority.http_guard import GuardedListener, describe
from authority.runtime.build import HttpSite, Servicers
from authority.services.admin_credential import AdminCredential
from authority.tls import http_ssl_context
from authority.tokens.verifier import TokenVerifier
from authority.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    revocation_pb2,
    revocation_pb2_grpc,
    token_pb2,
)

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    revocation_pb2.DESCRIPTOR.services_by_name["RevocationService"].full_name,
    ext_authz.SERVICE_NAME,  # Envoy's ext_authz (deploy/envoy)
)
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024),
    ("grpc.max_send_message_length", 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
]


async def start_grpc(
    settings: Settings,
    address: str,
    credentials: grpc.ServerCredentials | None,
    servicers: Servicers,
    *,
    verifier: TokenVerifier,
    health_servicer: health.aio.HealthServicer,
    is_admin: Callable[[str], bool],
    admin: AdminCredential | None,
    max_connections: int,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    admin_listed: bool = True,
    tracing: Tracing | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server on ``address``, and its bound port. ``admin`` None: this
    listener refuses admin RPCs. ``admin_listed`` False: reflection does not list
    AdminService (a separate admin listener serves it). ``tracing`` None: no span
    wrapper at all."""
    s = settings
    tokens, keys, admin_servicer, revocations = servicers
    bounds = grpc_connection_options(
        max_connections=max_connections,
        handshake_timeout=s.header_timeout,
        idle_timeout=s.idle_timeout,
        max_age=s.max_connection_age,
        max_age_grace=s.max_connection_age_grace,
    )
    # No interceptors: grpc.aio would run each one's coroutine on every call. Every
    # handler is wrapped once, as it is registered (api.call_pipeline): request id,
    # decode guard, admin gate, tracing, one log line and the RPC metrics per call.
    server = grpc.aio.server(
        options=[*GRPC_OPTIONS, *bounds, ("grpc.so_reuseport", int(s.reuse_port))],
    )
    pipeline = CallPipeline(admin=admin, is_admin=is_admin, tracing=tracing)
    # The generated add_*_to_server functions register on whatever they are given.
    target = cast(grpc.aio.Server, Registrar(server, pipeline.wrap))
    token_service.add_to_server(tokens, target)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(keys, target)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(admin_servicer, target)
    revocation_pb2_grpc.add_RevocationServiceServicer_to_server(revocations, target)
    ext_authz.add_to_server(ext_authz.AuthorizationServicer(verifier=verifier), target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    target.add_generic_rpc_handlers(tuple(extra_handlers))
    if s.reflection:
        listed = [name for name in SERVICE_NAMES if admin_listed or name != ADMIN_SERVICE]
        reflection.enable((*listed, health.SERVICE_NAME), target)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    await server.start()
    return server, port


def http_listener(settings: Settings, address: str) -> GuardedListener:
    return GuardedListener(
        parse_address(address),
        handshake_timeout=settings.header_timeout.total_seconds(),
        ssl_context=http_ssl_context(settings),
        reuse_port=settings.reuse_port,
    )


async def serve_http(settings: Settings, listener: GuardedListener, site: HttpSite) -> None:
    """Serve ``site`` on ``listener`` (bound), under the site's guard."""
    runner = web.AppRunner(
        site.app,
        access_log=None,
        # aiohttp's own keep-alive close; the guard enforces header and idle deadlines.
        keepalive_timeout=settings.idle_timeout.total_seconds(),
        max_line_size=8190,
        max_field_size=8190,
    )
    await runner.setup()
    await listener.serve(runner, site.guard)


async def close_http(listener: GuardedListener) -> None:
    await listener.stop()
    if listener.guard is not None:
        log.info("http.connections", **describe(listener.guard))
    if listener.runner is not None:
        await listener.runner.cleanup()
