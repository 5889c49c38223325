"""Wiring and lifecycle: build every component from Settings, start in order, stop in reverse."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authority.api import ext_authz
from authority.api.admin_auth import AdminGate
from authority.api.admin_service import AdminServicer
from authority.api.decoding import DecodeGuard
from authority.api.key_service import KeyServicer
from authority.api.reader_auth import RevocationReaders
from authority.api.revocation_service import RevocationServicer
from authority.api.token_service import TokenServicer
from authority.backends import build_backends
from authority.config import ConfigError, Settings, parse_address
from authority.connection_limits import (
    ConnectionCaps,
    derive_caps,
    descriptor_limit,
    grpc_connection_options,
)
from authority.domain.clock import Clock, SystemClock
from authority.domain.errors import Unavailable
from authority.domain.keys import KeyPolicy
from authority.domain.password_policy import PasswordPolicy
from authority.domain.revocation import RevocationSet
from authority.domain.write_health import KEY_ROTATION, OUTBOX_RELAY, WriteHealth
from authority.http_api import build_app, build_metrics_app
from authority.http_guard import ConnectionGuard, GuardedListener, describe
from authority.keys.manager import KeyManager
from authority.lifecycle import bounded, cancel_all
from authority.loops import Loop, run_loops
from authority.oauth.grants import OAuthGrants, ServiceGrants
from authority.oauth.http import OAuthEndpoints
from authority.observability import logging as observability_logging
from authority.observability import metrics
from authority.services.admin_credential import AdminCredential
from authority.services.audit import AuditLogService
from authority.services.clients import ClientService, default_client
from authority.services.grants import (
    ClientAuthenticator,
    ClientCredentialsGrant,
    Grants,
    PasswordGrant,
    TokenExchangeGrant,
)
from authority.services.installation import open_installation
from authority.services.minter import TokenMinter
from authority.services.outbox import (
    AUDIT_GROUP,
    AuditConsumer,
    EventSink,
    LocalEventSink,
    OutboxRelay,
)
from authority.services.passwords import HashParameters, PasswordHasher
from authority.services.principals import PrincipalService
from authority.services.refresh import RefreshService
from authority.services.revocation_feed import RevocationFeed
from authority.services.revocations import RevocationService
from authority.services.token_revocation import TokenRevoker
from authority.services.webhooks import WEBHOOK_GROUP, WebhookDispatcher
from authority.store.observed import observed
from authority.tls import admin_credentials, http_ssl_context, server_credentials
from authority.tokens.verifier import TokenVerifier
from authority.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    revocation_pb2,
    revocation_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)

log = structlog.get_logger(__name__)

# Health service names: liveness says the process runs; readiness says it can do its job
# (storage reachable and, in production, the fan-out connected).
LIVENESS = "liveness"
READINESS = "readiness"
READINESS_INTERVAL = 1.0
# Each stop step past the gRPC drain gets this long; the whole stop stays well within
# grace + 5 s (the bound tests/adversarial/test_shutdown.py holds it to).
STEP_SECONDS = 0.5


def host_of(address: str) -> str:
    host, _ = parse_address(address)
    return f"[{host}]" if ":" in host else host


SERVICE_NAMES = (
    token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    revocation_pb2.DESCRIPTOR.services_by_name["RevocationService"].full_name,
    ext_authz.SERVICE_NAME,  # Envoy's ext_authz (deploy/envoy)
)
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
HTTP_HANDLER_TIMEOUT = 10.0  # seconds; JWKS, discovery, probes and metrics answer from memory
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024),
    ("grpc.max_send_message_length", 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
]


@dataclass
class Ports:
    grpc: int = 0
    http: int = 0
    admin: int = 0
    metrics: int = 0


Servicers = tuple[TokenServicer, KeyServicer, AdminServicer, RevocationServicer]


@dataclass
class Authority:
    """The running service. ``start`` does the I/O; ``stop`` is idempotent."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    ports: Ports = field(default_factory=Ports)
    # Extra gRPC handlers served next to ours (the benchmark's bare echo uses this).
    extra_handlers: Sequence[grpc.GenericRpcHandler] = ()

    def __post_init__(self) -> None:
        s = self.settings
        self.backends = build_backends(s)
        # Consecutive failed writes turn readiness off (a full disk fails every write
        # while reads, and a read-only probe, still succeed).
        self.write_health = WriteHealth(s.write_failure_threshold)
        # Consecutive crashes of each background loop (see authority.loops), likewise.
        self.loop_health = WriteHealth(s.write_failure_threshold)
        self.store = observed(self.backends.store, self.write_health)
        self.policy = KeyPolicy(
            rotation_period=s.key_rotation_period,
            prepublish=s.key_prepublish,
            max_token_ttl=s.access_token_ttl,
            leeway=s.leeway,
            algorithm=s.algorithm,
        )
        self.hasher = PasswordHasher(
            HashParameters(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism),
            workers=s.hash_workers,
        )
        self.revocations = RevocationSet()
        # Every change of the view, for WatchRevocations followers.
        self.revocation_feed = RevocationFeed(
            lambda: self.revocations.snapshot(self.clock.timestamp())
        )
        self.health = health.aio.HealthServicer()
        self._servers: list[grpc.aio.Server] = []
        self._bound: list[int] = []
        self._http: list[tuple[web.AppRunner, GuardedListener]] = []
        self._loops: asyncio.Task[None] | None = None
        self._stopped = False
        self.ready = True
        # The outbox relay and its sink (a Redis stream in production, else in-process).
        self.events = self._event_sink()
        self.outbox = OutboxRelay(store=self.store, sink=self.events, clock=self.clock)
        self.outbox.lag = metrics.ExportedHistogram(metrics.OUTBOX_RELAY_LAG)
        self.outbox.on_depth = metrics.OUTBOX_DEPTH.set
        self.outbox.on_outcome = functools.partial(self._write_outcome, OUTBOX_RELAY)
        self.audit = AuditConsumer(self.store)
        self.webhooks: WebhookDispatcher | None = None  # needs the KEK: built in start
        self.oauth_grants: OAuthGrants | None = None  # the HTTP OAuth endpoints' services

    def _event_sink(self) -> EventSink:
        s = self.settings
        if s.redis_url:
            from authority.redis.events import RedisStreamSink  # noqa: PLC0415 - optional

            return RedisStreamSink(s.redis_url, prefix=s.redis_prefix)
        return LocalEventSink(groups=(AUDIT_GROUP, WEBHOOK_GROUP))

    async def start(self) -> None:
        s = self.settings
        if s.short_prepublish:
            log.warning(
                "config.short_prepublish",
                prepublish_seconds=s.key_prepublish.total_seconds(),
                hint="verifiers that cache the JWKS for 10 minutes may meet an unknown kid",
            )
        # Proves the KEK opens what is stored before anything is written, and generates
        # the embedded default's KEK and admin token only for a new installation.
        try:
            self.caps = derive_caps(
                descriptor_limit(), grpc=s.grpc_max_connections, http=s.http_max_connections
            )
        except ValueError as exc:
            raise ConfigError(f"invalid configuration:\n  {exc}") from exc
        installation = await open_installation(s, self.store)
        admin = AdminCredential(installation.admin_secret)
        # Names the admin as the principal in the per-RPC log line (see _start_grpc).
        self._is_admin = admin.matches
        await self.backends.fanout.start()
        await self.events.start()
        self.keys = KeyManager(
            fanout=self.backends.fanout,
            store=self.store,
            kek=installation.kek,
            policy=self.policy,
            clock=self.clock,
            jwks_max_age=s.jwks_max_age,
            check_interval=s.key_check_interval,
        )
        self.keys.on_outcome = functools.partial(self._write_outcome, KEY_ROTATION)
        await self.keys.start()
        # Webhook signing secrets are wrapped under the same KEK ring as the signing keys.
        self.webhooks = WebhookDispatcher(
            store=self.store,
            kek=installation.kek,
            clock=self.clock,
            on_outcome=metrics.count_webhook,
            allowed=s.webhook_allowed_networks,
        )
        await self._start_http()
        # Derived after binding, so that port 0 (tests) still yields a reachable issuer URL.
        self.issuer = (
            s.issuer.rstrip("/") or f"{s.http_scheme}://{host_of(s.http_address)}:{self.ports.http}"
        )
        self.verifier = TokenVerifier(
            keys=lambda: self.keys.snapshot().verification_keys,
            issuer=self.issuer,
            default_audience=s.audience,
            leeway=s.leeway.total_seconds(),
            max_token_bytes=s.max_token_bytes,
            revocations=self.revocations,
            clock=self.clock,
            cache_size=s.verify_cache_size,
        )
        self.revocation_service = RevocationService(
            store=self.store,
            view=self.revocations,
            clock=self.clock,
            max_access_ttl=s.access_token_ttl,
            leeway=s.leeway,
            grace=s.refresh_grace,
            fanout=self.backends.fanout,
            poll_interval=s.revocation_poll,
            feed=self.revocation_feed,
        )
        self.revocation_service.lag = metrics.ExportedHistogram()  # exported on /metrics
        await self.revocation_service.load()
        clients = ClientService(
            store=self.store,
            clock=self.clock,
            default_client=default_client(
                audience=s.audience,
                access_ttl_seconds=s.access_token_ttl.total_seconds(),
                idle_ttl_seconds=s.session_idle_ttl.total_seconds(),
                absolute_ttl_seconds=s.session_absolute_ttl.total_seconds(),
            ),
            revocations=self.revocation_service,
            max_access_ttl_seconds=s.access_token_ttl.total_seconds(),
        )
        self.token_minter = TokenMinter(
            store=self.store,
            keys=self.keys,
            view=self.revocations,
            clock=self.clock,
            issuer=self.issuer,
            leeway=s.leeway,
        )
        client_auth = ClientAuthenticator(
            clients=clients, gate=self.backends.gate, clock=self.clock
        )
        grants = Grants(
            password=PasswordGrant(
                minter=self.token_minter,
                store=self.store,
                hasher=self.hasher,
                clients=clients,
                gate=self.backends.gate,
                clock=self.clock,
                enabled=s.oauth_password_grant,
            ),
            client_credentials=ClientCredentialsGrant(
                minter=self.token_minter, store=self.store, clients=client_auth
            ),
            token_exchange=TokenExchangeGrant(
                minter=self.token_minter,
                store=self.store,
                clients=client_auth,
                verifier=self.verifier,
            ),
        )
        refresh = RefreshService(
            minter=self.token_minter,
            store=self.store,
            clients=clients,
            revocations=self.revocation_service,
            clock=self.clock,
            grace=s.refresh_grace,
        )
        token_revocations = TokenRevoker(
            store=self.store,
            verifier=self.verifier,
            revocations=self.revocation_service,
            clock=self.clock,
        )
        self.oauth_grants = ServiceGrants(
            grants=grants,
            refresh=refresh,
            clients=client_auth,
            revoker=token_revocations,
            verifier=self.verifier,
            revoke_limit=self.backends.revoke_limit,
            clock=self.clock,
        )
        principals = PrincipalService(
            store=self.store,
            hasher=self.hasher,
            clock=self.clock,
            policy=PasswordPolicy.default(min_length=s.min_password_length),
            revocations=self.revocation_service,
        )

        def servicers(admin_allowed: AdminCredential | None) -> Servicers:
            return (
                TokenServicer(
                    grants=grants,
                    refresh=refresh,
                    verifier=self.verifier,
                    revocations=self.revocation_service,
                    token_revocations=token_revocations,
                    admin=admin_allowed,
                    revoke_limit=self.backends.revoke_limit,
                    clock=self.clock,
                ),
                KeyServicer(keys=self.keys, clock=self.clock),
                AdminServicer(
                    principals=principals,
                    clients=clients,
                    audit=AuditLogService(store=self.store),
                    webhooks=self.webhooks,
                ),
                RevocationServicer(
                    view=self.revocations,
                    feed=self.revocation_feed,
                    clock=self.clock,
                    heartbeat=s.watch_heartbeat,
                    readers=RevocationReaders(verifier=self.verifier, admin=admin_allowed),
                ),
            )

        # With a separate admin listener, the public one refuses admin RPCs outright.
        public_admin = None if s.admin_address else admin
        self._servers.append(
            await self._start_grpc(
                s.grpc_address,
                server_credentials(s),
                servicers(public_admin),
                admin=public_admin,
                max_connections=self.caps.grpc,
                admin_listed=not s.admin_address,
            )
        )
        self.ports.grpc = self._bound[-1]
        if s.admin_address:
            self._servers.append(
                await self._start_grpc(
                    s.admin_address,
                    admin_credentials(s),
                    servicers(admin),
                    admin=admin,
                    max_connections=self.caps.admin,
                )
            )
            self.ports.admin = self._bound[-1]
        self._loops = asyncio.create_task(
            run_loops(self._background_loops(), health=self.loop_health), name="loops"
        )
        for name in ("", LIVENESS, READINESS, *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "authority.ready",
            grpc_port=self.ports.grpc,
            http_port=self.ports.http,
            admin_port=self.ports.admin or None,
            metrics_port=self.ports.metrics or None,
            connection_caps=self._caps_for_log(),
            tls=self.settings.tls_cert_file is not None,
            issuer=self.issuer,
            data_dir=str(s.data_dir),
            mode=self.backends.mode,
        )

    def _caps_for_log(self) -> dict[str, int]:
        caps: ConnectionCaps = self.caps
        shown = {"grpc": caps.grpc, "http": caps.http, "fd_limit": descriptor_limit()}
        if self.settings.admin_address:
            shown["admin"] = caps.admin
        if self.settings.metrics_address:
            shown["metrics"] = caps.metrics
        return shown

    def _background_loops(self) -> dict[str, Loop]:
        """Every loop of the process, by name (the name readiness and metrics report)."""
        fanout, webhooks = self.backends.fanout, self.webhooks
        assert webhooks is not None  # built by start, before the loops
        return {
            "key-rotation": self.keys.run,
            "audit-consumer": lambda: self.outbox.consume(AUDIT_GROUP, self.audit),
            "webhook-consumer": lambda: self.outbox.consume(WEBHOOK_GROUP, webhooks),
            "outbox-relay": self.outbox.run,
            "revocation-expiry": self.revocation_service.run,
            "revocation-poll": self.revocation_service.run_poll,
            "fanout": lambda: fanout.listen(
                on_revocation=self.revocation_service.received,
                on_key_ring_changed=self._key_ring_changed,
                on_connected=self._fanout_connected,
            ),
            "readiness": self._watch_readiness,
        }

    async def _key_ring_changed(self) -> None:
        await self.keys.reload()

    async def _fanout_connected(self) -> None:
        """(Re)connected to the fan-out: catch up on whatever was missed meanwhile."""
        await self.revocation_service.resync()
        await self.keys.reload()

    def _write_outcome(self, source: str, ok: bool) -> None:
        self.write_health.record(source, ok)

    async def _check_ready(self) -> bool:
        """Storage answers and takes writes, no background loop keeps crashing, a key
        signs, and, in production, the fan-out is connected."""
        if not (self.write_health.healthy and self.loop_health.healthy):
            return False
        try:
            async with asyncio.timeout(2.0):
                await self.store.key_ring_generation()
        except (Unavailable, TimeoutError):
            return False
        return self.keys.snapshot().signer is not None and self.backends.fanout.healthy

    async def _watch_readiness(self) -> None:
        """Readiness follows the dependencies; liveness stays SERVING while we run."""
        ready = True
        while True:
            await asyncio.sleep(READINESS_INTERVAL)
            now_ready = await self._check_ready()
            if now_ready != ready:
                ready = now_ready
                self.ready = ready
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                await self.health.set(READINESS, status)
                log.warning(
                    "readiness.changed",
                    ready=ready,
                    mode=self.backends.mode,
                    failing_writes=self.write_health.failing(),
                    failing_loops=self.loop_health.failing(),
                )

    async def _start_grpc(
        self,
        address: str,
        credentials: grpc.ServerCredentials | None,
        servicers: Servicers,
        *,
        admin: AdminCredential | None,
        max_connections: int,
        admin_listed: bool = True,
    ) -> grpc.aio.Server:
        """``admin`` None: this listener refuses admin RPCs. ``admin_listed`` False:
        reflection does not list AdminService (a separate admin listener serves it)."""
        s = self.settings
        tokens, keys, admin_servicer, revocations = servicers
        bounds = grpc_connection_options(
            max_connections=max_connections,
            handshake_timeout=s.header_timeout,
            idle_timeout=s.idle_timeout,
            max_age=s.max_connection_age,
            max_age_grace=s.max_connection_age_grace,
        )
        server = grpc.aio.server(
            # One log line and the RPC metrics per call. One interceptor per server: it
            # caches the wrapped handlers of *this* server's servicers.
            interceptors=[
                observability_logging.RpcInterceptor(is_admin=self._is_admin),
                DecodeGuard(),  # inside the logging one: undecodable calls are logged too
                AdminGate(admin),  # after decoding, as the handlers' own checks were
            ],
            options=[*GRPC_OPTIONS, *bounds, ("grpc.so_reuseport", int(s.reuse_port))],
        )
        token_pb2_grpc.add_TokenServiceServicer_to_server(tokens, server)
        keys_pb2_grpc.add_KeyServiceServicer_to_server(keys, server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin_servicer, server)
        revocation_pb2_grpc.add_RevocationServiceServicer_to_server(revocations, server)
        ext_authz.add_to_server(ext_authz.AuthorizationServicer(verifier=self.verifier), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        server.add_generic_rpc_handlers(tuple(self.extra_handlers))
        if self.settings.reflection:
            listed = [name for name in SERVICE_NAMES if admin_listed or name != ADMIN_SERVICE]
            reflection.enable_server_reflection(
                (*listed, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        if port == 0:
            raise OSError(f"cannot bind gRPC to {address}")
        await server.start()
        self._bound.append(port)
        return server

    async def _start_http(self) -> None:
        s = self.settings
        exposition = metrics.exposition(
            [
                metrics.KeyRingCollector(self.keys.snapshot, self.policy, self.clock),
                metrics.WriteHealthCollector(self.write_health),
                metrics.LoopHealthCollector(self.loop_health),
            ]
        )
        guard = self._http_guard(self.caps.http, "http")
        app = build_app(
            jwks=lambda: self.keys.snapshot().jwks,
            issuer=lambda: self.issuer,
            live=lambda: not self._stopped,
            ready=lambda: self.ready and not self._stopped,
            oauth=OAuthEndpoints(lambda: self.oauth_grants, self.clock),
            password_grant=s.oauth_password_grant,
            # With its own address, /metrics is served there only.
            metrics=None if s.metrics_address else exposition,
            metrics_content_type=metrics.CONTENT_TYPE,
            middlewares=[guard.middleware],
        )
        self.ports.http = await self._serve_http(app, guard, s.http_address)
        if s.metrics_address:
            metrics_guard = self._http_guard(self.caps.metrics, "metrics")
            metrics_app = build_metrics_app(
                exposition, metrics.CONTENT_TYPE, middlewares=[metrics_guard.middleware]
            )
            self.ports.metrics = await self._serve_http(
                metrics_app, metrics_guard, s.metrics_address
            )

    @staticmethod
    async def _close_http(runner: web.AppRunner, listener: GuardedListener) -> None:
        await listener.stop()
        log.info("http.connections", **describe(listener.guard))
        await runner.cleanup()

    def _http_guard(self, cap: int, listener: str) -> ConnectionGuard:
        s = self.settings
        return ConnectionGuard(
            cap=cap,
            header_timeout=s.header_timeout.total_seconds(),
            idle_timeout=s.idle_timeout.total_seconds(),
            handler_timeout=HTTP_HANDLER_TIMEOUT,
            on_close=metrics.http_connection_closed(listener),
        )

    async def _serve_http(self, app: web.Application, guard: ConnectionGuard, address: str) -> int:
        """Serve ``app`` on ``address`` under ``guard``; the bound port."""
        s = self.settings
        runner = web.AppRunner(
            app,
            access_log=None,
            # aiohttp's own keep-alive close; the guard enforces header and idle deadlines.
            keepalive_timeout=s.idle_timeout.total_seconds(),
            max_line_size=8190,
            max_field_size=8190,
        )
        await runner.setup()
        listener = GuardedListener(
            runner,
            guard,
            parse_address(address),
            ssl_context=http_ssl_context(s),
            reuse_port=s.reuse_port,
        )
        self._http.append((runner, listener))
        await listener.start()
        return listener.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, drain in-flight calls within the grace period, then close storage.

        Every step is bounded (see ``authority.lifecycle``): the whole stop takes at most
        the grace period plus ``STOP_MARGIN`` seconds, whatever a dependency does."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace.total_seconds() if grace is None else grace
        log.info("authority.stopping", grace_seconds=grace)
        try:
            await bounded("health", self.health.enter_graceful_shutdown(), STEP_SECONDS)
            # Watch streams never finish by themselves: end them now (followers reconnect,
            # elsewhere) rather than hold the stop for the whole grace period.
            self.revocation_feed.close()
            await bounded(
                "grpc",
                asyncio.gather(*(server.stop(grace) for server in self._servers)),
                grace + STEP_SECONDS,
            )
            for runner, listener in self._http:
                await bounded("http", self._close_http(runner, listener), STEP_SECONDS)
        finally:
            # Whatever failed above, release every resource: a thread left running (the
            # SQLite connection's) would keep the process from exiting.
            await cancel_all([self._loops] if self._loops else [], within=2 * STEP_SECONDS)
            self.hasher.close()
            await bounded("fanout", self.backends.fanout.close(), STEP_SECONDS)
            await bounded("events", self.events.close(), STEP_SECONDS)
            if self.webhooks is not None:
                await bounded("webhooks", self.webhooks.close(), STEP_SECONDS)
            await bounded("store", self.store.close(), 2 * STEP_SECONDS)
        log.info("authority.stopped")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    # The full configuration, with the redaction processor, before anything logs.
    observability_logging.configure_logging(fmt=settings.log_format, level=settings.log_level)
    authority = Authority(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await authority.start()
        await stop.wait()
    finally:
        await authority.stop()
