"""How many connections each listener may hold, and the gRPC options that bound them.

Every accepted connection costs a file descriptor. A process that runs out of them
(EMFILE) can neither accept a new client nor open its own files and sockets, so each
listener gets a cap, and the caps together stay well below RLIMIT_NOFILE: the rest is
headroom for the database, Redis, webhook deliveries, the thread pools and the logs.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from datetime import timedelta

# What the process itself may need besides its listeners' peers: a quarter of the limit,
# and never less than this many descriptors.
MIN_HEADROOM = 128
UNLIMITED_FDS = 1 << 20  # RLIM_INFINITY: count as a million
# Shares of what is left after the headroom; the remaining 1/16 is slack.
GRPC_SHARE, HTTP_SHARE, ADMIN_SHARE, METRICS_SHARE = 8, 4, 2, 1
SHARES = 16
MIN_CAP = 4


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """The most connections each listener holds at once."""

    grpc: int
    http: int
    admin: int
    metrics: int

    @property
    def total(self) -> int:
        return self.grpc + self.http + self.admin + self.metrics


def descriptor_limit() -> int:
    """This process's soft RLIMIT_NOFILE (the one that fails accept with EMFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_FDS if soft == resource.RLIM_INFINITY else int(soft)


def headroom(fd_limit: int) -> int:
    return max(MIN_HEADROOM, fd_limit // 4)


def derive_caps(fd_limit: int, *, grpc: int = 0, http: int = 0) -> ConnectionCaps:
    """Caps from the descriptor limit; ``grpc``/``http`` > 0 override those two.

    Raises ValueError when the caps would leave less than the headroom, so that peers
    could exhaust the descriptors the process needs for itself.
    """
    budget = max(0, fd_limit - headroom(fd_limit))
    caps = ConnectionCaps(
        grpc=grpc or max(MIN_CAP, budget * GRPC_SHARE // SHARES),
        http=http or max(MIN_CAP, budget * HTTP_SHARE // SHARES),
        admin=max(MIN_CAP, budget * ADMIN_SHARE // SHARES),
        metrics=max(MIN_CAP, budget * METRICS_SHARE // SHARES),
    )
    if caps.total > budget:
        raise ValueError(
            f"the connection caps (gRPC {caps.grpc}, HTTP {caps.http}, admin {caps.admin},"
            f" metrics {caps.metrics}) exceed what the descriptor limit {fd_limit} leaves"
            f" after {headroom(fd_limit)} for the process itself ({budget}): lower"
            " AUTHORITY_GRPC_MAX_CONNECTIONS / AUTHORITY_HTTP_MAX_CONNECTIONS or raise"
            " the limit (ulimit -n, LimitNOFILE=)"
        )
    return caps


def _ms(duration: timedelta) -> int:
    return max(1, int(duration.total_seconds() * 1000))


def grpc_connection_options(
    *,
    max_connections: int,
    handshake_timeout: timedelta,
    idle_timeout: timedelta,
    max_age: timedelta,
    max_age_grace: timedelta,
) -> list[tuple[str, int]]:
    """gRPC core channel arguments that bound what one peer holds.

    gRPC core has a per-listener connection quota (``grpc.max_allowed_incoming_connections``):
    a connection over it is closed right after accept, so its descriptor is released at
    once. The handshake timeout closes a connection that has not sent the HTTP/2 preface and
    SETTINGS (after TLS) in time: gRPC's header-read timeout. Idle connections (no RPC) get
    GOAWAY after ``idle_timeout``; every connection after ``max_age`` (its streams then get
    ``max_age_grace``; revocation watchers reconnect and resume).
    """
    return [
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.server_handshake_timeout_ms", _ms(handshake_timeout)),
        ("grpc.max_connection_idle_ms", _ms(idle_timeout)),
        ("grpc.max_connection_age_ms", _ms(max_age)),
        ("grpc.max_connection_age_grace_ms", _ms(max_age_grace)),
        # A peer may not open unbounded streams on one connection...
        ("grpc.max_concurrent_streams", 256),
        # ...nor keep a connection busy with pings: two strikes and it gets GOAWAY.
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.http2.max_pings_without_data", 2),
    ]
