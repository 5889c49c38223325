"""The runtime: the I/O of starting, in order, and of stopping, in reverse, bounded.

``Authority`` builds what needs no I/O when constructed (``build_base``); ``start`` opens
the installation, binds the HTTP listeners (the issuer names the port bound), builds the
rest (``build``, pure), starts the fan-out, the event sink and the key manager, serves
HTTP, loads the revocations, starts the gRPC servers and runs every background loop under
one task group; ``stop`` undoes it with every step bounded (``authority.lifecycle``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health_pb2

from authority.config import ConfigError, Settings
from authority.connection_limits import ConnectionCaps, derive_caps, descriptor_limit
from authority.domain.clock import Clock, SystemClock
from authority.http_guard import GuardedListener
from authority.lifecycle import bounded, cancel_all
from authority.loops import run_loops
from authority.observability import tracing as observability_tracing
from authority.runtime.background import LIVENESS, READINESS, background_loops
from authority.runtime.build import Base, Components, Servicers, build, build_base, issuer_for
from authority.runtime.event_loop import loop_name
from authority.runtime.heap import freeze_startup_heap, release_startup_heap
from authority.runtime.listeners import (
    SERVICE_NAMES,
    close_http,
    http_listener,
    serve_http,
    start_grpc,
)
from authority.services.admin_credential import AdminCredential
from authority.services.installation import open_installation
from authority.tls import admin_credentials, server_credentials

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

log = structlog.get_logger(__name__)

# Each stop step past the gRPC drain gets this long; the whole stop stays well within
# grace + 5 s (the bound tests/adversarial/test_shutdown.py holds it to).
STEP_SECONDS = 0.5


@dataclass
class Ports:
    grpc: int = 0
    http: int = 0
    admin: int = 0
    metrics: int = 0


@dataclass
class Authority:
    """The service. ``start`` does the I/O; ``stop`` is idempotent. Every attribute exists
    from construction; ``components`` answers once ``start`` has built them."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    ports: Ports = field(default_factory=Ports)
    # Extra gRPC handlers served next to ours (the benchmark's bare echo uses this).
    extra_handlers: Sequence[grpc.GenericRpcHandler] = ()
    # OpenTelemetry, as the OTEL_* variables configure it; None (the default without
    # them, or without the otel extra): no tracing code on any path.
    tracing: Tracing | None = field(default_factory=observability_tracing.from_environment)
    base: Base = field(init=False)
    _components: Components | None = field(init=False)
    _servers: list[grpc.aio.Server] = field(init=False)
    _http: list[GuardedListener] = field(init=False)
    _loops: asyncio.Task[None] | None = field(init=False)

    def __post_init__(self) -> None:
        self.base = build_base(self.settings, self.clock, tracing=self.tracing)
        self._components = None  # built by start, once the installation is open
        self._servers = []
        self._http = []
        self._loops = None

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("the authority has not been started")
        return self._components

    @property
    def ready(self) -> bool:
        return self.base.state.ready

    async def start(self) -> None:
        s, base = self.settings, self.base
        if s.short_prepublish:
            log.warning(
                "config.short_prepublish",
                prepublish_seconds=s.key_prepublish.total_seconds(),
                hint="verifiers that cache the JWKS for 10 minutes may meet an unknown kid",
            )
        try:
            caps = derive_caps(
                descriptor_limit(), grpc=s.grpc_max_connections, http=s.http_max_connections
            )
        except ValueError as exc:
            raise ConfigError(f"invalid configuration:\n  {exc}") from exc
        # Proves the KEK opens what is stored before anything is written, and generates
        # the embedded default's KEK and admin token only for a new installation.
        installation = await open_installation(s, base.store)
        await self._bind_http()
        c = self._components = build(
            base,
            settings=s,
            clock=self.clock,
            # Derived after binding, so that port 0 (tests) still yields a reachable URL.
            issuer=issuer_for(s, self.ports.http),
            installation=installation,
            caps=caps,
        )
        await base.backends.fanout.start()
        await base.events.start()
        await c.keys.start()
        for listener, site in zip(self._http, c.http, strict=True):
            await serve_http(s, listener, site)
        await c.revocation_service.load()
        await self._start_grpc(c)
        self._loops = asyncio.create_task(
            run_loops(background_loops(c), health=base.loop_health), name="loops"
        )
        for name in ("", LIVENESS, READINESS, *SERVICE_NAMES):
            await base.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        freeze_startup_heap()
        log.info(
            "authority.ready",
            grpc_port=self.ports.grpc,
            http_port=self.ports.http,
            admin_port=self.ports.admin or None,
            metrics_port=self.ports.metrics or None,
            connection_caps=self._caps_for_log(c.caps),
            tls=s.tls_cert_file is not None,
            issuer=c.issuer,
            data_dir=str(s.data_dir),
            mode=base.backends.mode,
            event_loop=loop_name(asyncio.get_running_loop()),
        )

    async def _bind_http(self) -> None:
        """Bind the public HTTP address and, with its own, the metrics one (not served
        yet: connections are refused until the application is built and served)."""
        s = self.settings
        public = http_listener(s, s.http_address)
        self._http.append(public)
        self.ports.http = await public.bind()
        if s.metrics_address:
            metrics = http_listener(s, s.metrics_address)
            self._http.append(metrics)
            self.ports.metrics = await metrics.bind()

    async def _start_grpc(self, c: Components) -> None:
        s = self.settings

        async def listen(
            address: str,
            credentials: grpc.ServerCredentials | None,
            servicers: Servicers,
            *,
            admin: AdminCredential | None,
            max_connections: int,
            admin_listed: bool = True,
        ) -> int:
            server, port = await start_grpc(
                s,
                address,
                credentials,
                servicers,
                verifier=c.verifier,
                health_servicer=self.base.health,
                # Names the admin as the principal in the per-RPC log line.
                is_admin=c.admin.matches,
                admin=admin,
                max_connections=max_connections,
                extra_handlers=self.extra_handlers,
                admin_listed=admin_listed,
                tracing=self.tracing,
            )
            self._servers.append(server)
            return port

        self.ports.grpc = await listen(
            s.grpc_address,
            server_credentials(s),
            c.public,
            admin=c.public_admin,
            max_connections=c.caps.grpc,
            admin_listed=not s.admin_address,
        )
        if s.admin_address and c.admin_only is not None:
            self.ports.admin = await listen(
                s.admin_address,
                admin_credentials(s),
                c.admin_only,
                admin=c.admin,
                max_connections=c.caps.admin,
            )

    def _caps_for_log(self, caps: ConnectionCaps) -> dict[str, int]:
        shown = {"grpc": caps.grpc, "http": caps.http, "fd_limit": descriptor_limit()}
        if self.settings.admin_address:
            shown["admin"] = caps.admin
        if self.settings.metrics_address:
            shown["metrics"] = caps.metrics
        return shown

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, drain in-flight calls within the grace period, then close storage.

        Every step is bounded (see ``authority.lifecycle``): the whole stop takes at most
        the grace period plus ``STOP_MARGIN`` seconds, whatever a dependency does."""
        base = self.base
        if base.state.stopped:
            return
        base.state.stopped = True
        release_startup_heap()
        grace = self.settings.shutdown_grace.total_seconds() if grace is None else grace
        log.info("authority.stopping", grace_seconds=grace)
        try:
            await bounded("health", base.health.enter_graceful_shutdown(), STEP_SECONDS)
            # Watch streams never finish by themselves: end them now (followers reconnect,
            # elsewhere) rather than hold the stop for the whole grace period.
            base.revocation_feed.close()
            await bounded(
                "grpc",
                asyncio.gather(*(server.stop(grace) for server in self._servers)),
                grace + STEP_SECONDS,
            )
            for listener in self._http:
                await bounded("http", close_http(listener), STEP_SECONDS)
        finally:
            # Whatever failed above, release every resource: a thread left running (the
            # SQLite connection's) would keep the process from exiting.
            await cancel_all([self._loops] if self._loops else [], within=2 * STEP_SECONDS)
            base.hasher.close()
            await bounded("fanout", base.backends.fanout.close(), STEP_SECONDS)
            await bounded("events", base.events.close(), STEP_SECONDS)
            if self._components is not None:
                await bounded("webhooks", self._components.webhooks.close(), STEP_SECONDS)
            await bounded("store", base.store.close(), 2 * STEP_SECONDS)
            if self.tracing is not None:  # the last spans, exported (or given up on)
                await bounded("tracing", self.tracing.shutdown(), 2 * STEP_SECONDS)
        log.info("authority.stopped")
