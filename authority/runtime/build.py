"""The pure build step: every component wired from Settings, with no I/O.

Two stages, because two facts are only known after some I/O: ``build_base`` makes what
exists before the store is opened (the store itself, the health trackers, the event
sink, the outbox relay); ``build`` makes the rest from what opening the store yields
(``Installation``: the KEK ring and the admin secret) and from the issuer, which names
the HTTP port actually bound (port 0 in tests; see ``authority.runtime.listeners``).
Both only construct objects: nothing here connects, binds, reads a file or starts a task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from grpc_health.v1 import health

from authority.api.admin_service import AdminServicer
from authority.api.key_service import KeyServicer
from authority.api.reader_auth import RevocationReaders
from authority.api.revocation_service import RevocationServicer
from authority.api.token_service import TokenServicer
from authority.backends import Backends, build_backends
from authority.config import Settings, parse_address
from authority.connection_limits import ConnectionCaps
from authority.domain.clock import Clock
from authority.domain.keys import KeyPolicy
from authority.domain.password_policy import PasswordPolicy
from authority.domain.revocation import RevocationSet
from authority.domain.write_health import KEY_ROTATION, OUTBOX_RELAY, WriteHealth
from authority.http_api import build_app, build_metrics_app
from authority.http_guard import ConnectionGuard
from authority.keys.manager import KeyManager
from authority.oauth.grants import OAuthGrants, ServiceGrants
from authority.oauth.http import OAuthEndpoints
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
from authority.services.installation import Installation
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
from authority.store.base import Store
from authority.store.observed import observed
from authority.tokens.verifier import TokenVerifier

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

HTTP_HANDLER_TIMEOUT = 10.0  # seconds; JWKS, discovery, probes and metrics answer from memory


@dataclass(slots=True)
class RunState:
    """What the probes report; the runtime's to change (readiness, stopping)."""

    ready: bool = True
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class Base:
    """What exists before the store is opened, and what stopping always releases."""

    backends: Backends
    store: Store  # observed: its write outcomes feed ``write_health``
    # Consecutive failed writes turn readiness off (a full disk fails every write while
    # reads, and a read-only probe, still succeed).
    write_health: WriteHealth
    # Consecutive crashes of each background loop (see authority.loops), likewise.
    loop_health: WriteHealth
    policy: KeyPolicy
    hasher: PasswordHasher
    revocations: RevocationSet
    revocation_feed: RevocationFeed  # every change of the view, for WatchRevocations
    health: health.aio.HealthServicer
    events: EventSink  # a Redis stream in production, else in-process
    outbox: OutboxRelay
    audit: AuditConsumer
    state: RunState
    tracing: Tracing | None = None  # OpenTelemetry, when OTEL_* turns it on


def event_sink(settings: Settings) -> EventSink:
    if settings.redis_url:
        from authority.redis.events import RedisStreamSink  # noqa: PLC0415 - optional

        return RedisStreamSink(settings.redis_url, prefix=settings.redis_prefix)
    return LocalEventSink(groups=(AUDIT_GROUP, WEBHOOK_GROUP))


def build_base(settings: Settings, clock: Clock, *, tracing: Tracing | None = None) -> Base:
    s = settings
    backends = build_backends(s, tracing)
    write_health = WriteHealth(s.write_failure_threshold)
    store = observed(backends.store, write_health)
    if tracing is not None:
        from authority.store.traced import traced  # noqa: PLC0415 - the optional extra

        store = traced(store, tracing, system="postgresql" if s.database_url else "sqlite")
    revocations = RevocationSet()
    events = event_sink(s)
    outbox = OutboxRelay(store=store, sink=events, clock=clock)
    outbox.lag = metrics.ExportedHistogram(metrics.OUTBOX_RELAY_LAG)
    outbox.on_depth = metrics.OUTBOX_DEPTH.set
    outbox.on_outcome = functools.partial(write_health.record, OUTBOX_RELAY)
    return Base(
        backends=backends,
        store=store,
        write_health=write_health,
        loop_health=WriteHealth(s.write_failure_threshold),
        policy=KeyPolicy(
            rotation_period=s.key_rotation_period,
            prepublish=s.key_prepublish,
            max_token_ttl=s.access_token_ttl,
            leeway=s.leeway,
            algorithm=s.algorithm,
        ),
        hasher=PasswordHasher(
            HashParameters(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism),
            workers=s.hash_workers,
        ),
        revocations=revocations,
        revocation_feed=RevocationFeed(lambda: revocations.snapshot(clock.timestamp())),
        health=health.aio.HealthServicer(),
        events=events,
        outbox=outbox,
        audit=AuditConsumer(store),
        state=RunState(),
        tracing=tracing,
    )


Servicers = tuple[TokenServicer, KeyServicer, AdminServicer, RevocationServicer]


@dataclass(frozen=True, slots=True)
class HttpSite:
    """One HTTP listener's application and the guard that bounds its connections."""

    app: web.Application
    guard: ConnectionGuard


@dataclass(frozen=True, slots=True)
class Components:
    """Everything wired, nothing started: what the runtime starts, serves and stops."""

    base: Base
    issuer: str
    caps: ConnectionCaps  # the most connections each listener holds
    admin: AdminCredential
    keys: KeyManager
    webhooks: WebhookDispatcher
    verifier: TokenVerifier
    revocation_service: RevocationService
    clients: ClientService
    minter: TokenMinter
    grants: Grants
    refresh: RefreshService
    token_revoker: TokenRevoker
    principals: PrincipalService
    # The public listener's servicers, and the admin listener's when it has its own
    # address (the public one then refuses admin RPCs: ``public_admin`` is None).
    public_admin: AdminCredential | None
    public: Servicers
    admin_only: Servicers | None
    http: tuple[HttpSite, ...]


def host_of(address: str) -> str:
    host, _ = parse_address(address)
    return f"[{host}]" if ":" in host else host


def issuer_for(settings: Settings, http_port: int) -> str:
    """The configured issuer, else this server's HTTP URL on the port actually bound."""
    return (
        settings.issuer.rstrip("/")
        or f"{settings.http_scheme}://{host_of(settings.http_address)}:{http_port}"
    )


def build(
    base: Base,
    *,
    settings: Settings,
    clock: Clock,
    installation: Installation,
    issuer: str,
    caps: ConnectionCaps,
) -> Components:
    s, store = settings, base.store
    admin = AdminCredential(installation.admin_secret)
    keys = KeyManager(
        fanout=base.backends.fanout,
        store=store,
        kek=installation.kek,
        policy=base.policy,
        clock=clock,
        jwks_max_age=s.jwks_max_age,
        check_interval=s.key_check_interval,
    )
    keys.on_outcome = functools.partial(base.write_health.record, KEY_ROTATION)
    # Webhook signing secrets are wrapped under the same KEK ring as the signing keys.
    webhooks = WebhookDispatcher(
        store=store,
        kek=installation.kek,
        clock=clock,
        on_outcome=metrics.count_webhook,
        allowed=s.webhook_allowed_networks,
    )
    verifier = TokenVerifier(
        keys=lambda: keys.snapshot().verification_keys,
        issuer=issuer,
        default_audience=s.audience,
        leeway=s.leeway.total_seconds(),
        max_token_bytes=s.max_token_bytes,
        revocations=base.revocations,
        clock=clock,
        cache_size=s.verify_cache_size,
    )
    revocation_service = RevocationService(
        store=store,
        view=base.revocations,
        clock=clock,
        max_access_ttl=s.access_token_ttl,
        leeway=s.leeway,
        grace=s.refresh_grace,
        fanout=base.backends.fanout,
        poll_interval=s.revocation_poll,
        feed=base.revocation_feed,
    )
    revocation_service.lag = metrics.ExportedHistogram()  # exported on /metrics
    clients = ClientService(
        store=store,
        clock=clock,
        default_client=default_client(
            audience=s.audience,
            access_ttl_seconds=s.access_token_ttl.total_seconds(),
            idle_ttl_seconds=s.session_idle_ttl.total_seconds(),
            absolute_ttl_seconds=s.session_absolute_ttl.total_seconds(),
        ),
        revocations=revocation_service,
        max_access_ttl_seconds=s.access_token_ttl.total_seconds(),
    )
    minter = TokenMinter(
        store=store, keys=keys, view=base.revocations, clock=clock, issuer=issuer, leeway=s.leeway
    )
    gate = base.backends.gate
    client_auth = ClientAuthenticator(clients=clients, gate=gate, clock=clock)
    grants = Grants(
        password=PasswordGrant(
            minter=minter,
            store=store,
            hasher=base.hasher,
            clients=clients,
            gate=gate,
            clock=clock,
            enabled=s.oauth_password_grant,
        ),
        client_credentials=ClientCredentialsGrant(minter=minter, store=store, clients=client_auth),
        token_exchange=TokenExchangeGrant(
            minter=minter, store=store, clients=client_auth, verifier=verifier
        ),
    )
    refresh = RefreshService(
        minter=minter,
        store=store,
        clients=clients,
        revocations=revocation_service,
        clock=clock,
        grace=s.refresh_grace,
    )
    token_revoker = TokenRevoker(
        store=store, verifier=verifier, revocations=revocation_service, clock=clock
    )
    # The HTTP OAuth endpoints call the same services as the gRPC TokenServicer.
    oauth = ServiceGrants(
        grants=grants,
        refresh=refresh,
        clients=client_auth,
        revoker=token_revoker,
        verifier=verifier,
        revoke_limit=base.backends.revoke_limit,
        clock=clock,
    )
    principals = PrincipalService(
        store=store,
        hasher=base.hasher,
        clock=clock,
        policy=PasswordPolicy.default(min_length=s.min_password_length),
        revocations=revocation_service,
    )

    def servicers(admin_allowed: AdminCredential | None) -> Servicers:
        return (
            TokenServicer(
                grants=grants,
                refresh=refresh,
                verifier=verifier,
                revocations=revocation_service,
                token_revocations=token_revoker,
                admin=admin_allowed,
                revoke_limit=base.backends.revoke_limit,
                clock=clock,
            ),
            KeyServicer(keys=keys, clock=clock),
            AdminServicer(
                principals=principals,
                clients=clients,
                audit=AuditLogService(store=store),
                webhooks=webhooks,
            ),
            RevocationServicer(
                view=base.revocations,
                feed=base.revocation_feed,
                clock=clock,
                heartbeat=s.watch_heartbeat,
                readers=RevocationReaders(verifier=verifier, admin=admin_allowed),
            ),
        )

    # With a separate admin listener, the public one refuses admin RPCs outright.
    public_admin = None if s.admin_address else admin
    return Components(
        base=base,
        issuer=issuer,
        caps=caps,
        admin=admin,
        keys=keys,
        webhooks=webhooks,
        verifier=verifier,
        revocation_service=revocation_service,
        clients=clients,
        minter=minter,
        grants=grants,
        refresh=refresh,
        token_revoker=token_revoker,
        principals=principals,
        public_admin=public_admin,
        public=servicers(public_admin),
        admin_only=servicers(admin) if s.admin_address else None,
        http=http_sites(
            base, settings=s, clock=clock, keys=keys, issuer=issuer, caps=caps, oauth=oauth
        ),
    )


def http_guard(settings: Settings, cap: int, listener: str) -> ConnectionGuard:
    return ConnectionGuard(
        cap=cap,
        header_timeout=settings.header_timeout.total_seconds(),
        idle_timeout=settings.idle_timeout.total_seconds(),
        handler_timeout=HTTP_HANDLER_TIMEOUT,
        on_close=metrics.http_connection_closed(listener),
    )


def traced_http(tracing: Tracing | None) -> list[Middleware]:
    """The tracing middleware when tracing is on (outermost: the span covers the guard's
    refusals and timeouts too); nothing otherwise."""
    if tracing is None:
        return []
    from authority.observability.otel_http import middleware  # noqa: PLC0415 - optional

    return [middleware(tracing)]


def http_sites(
    base: Base,
    *,
    settings: Settings,
    clock: Clock,
    keys: KeyManager,
    issuer: str,
    caps: ConnectionCaps,
    oauth: OAuthGrants,
) -> tuple[HttpSite, ...]:
    """The public HTTP application (JWKS, discovery, OAuth endpoints, probes) and, with
    its own address,
    the one that serves /metrics there only."""
    s, state = settings, base.state
    exposition: Callable[[], bytes] = metrics.exposition(
        [
            metrics.KeyRingCollector(keys.snapshot, base.policy, clock),
            metrics.WriteHealthCollector(base.write_health),
            metrics.LoopHealthCollector(base.loop_health),
        ]
    )
    guard = http_guard(s, caps.http, "http")
    app = build_app(
        jwks=lambda: keys.snapshot().jwks,
        issuer=lambda: issuer,
        live=lambda: not state.stopped,
        ready=lambda: state.ready and not state.stopped,
        oauth=OAuthEndpoints(lambda: oauth, clock),
        password_grant=s.oauth_password_grant,
        metrics=None if s.metrics_address else exposition,
        metrics_content_type=metrics.CONTENT_TYPE,
        middlewares=[*traced_http(base.tracing), guard.middleware],
    )
    sites = [HttpSite(app, guard)]
    if s.metrics_address:
        metrics_guard = http_guard(s, caps.metrics, "metrics")
        metrics_app = build_metrics_app(
            exposition, metrics.CONTENT_TYPE, middlewares=[metrics_guard.middleware]
        )
        sites.append(HttpSite(metrics_app, metrics_guard))
    return tuple(sites)
