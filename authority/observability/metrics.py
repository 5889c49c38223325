"""Prometheus metrics, served on the HTTP port at ``/metrics``.

What is counted where, and why there:

* per-RPC count (by status code) and latency: the gRPC interceptor, once per call, with
  label children bound once per method so the hot path is two dictionary lookups;
* Verify results by reason: the same interceptor reads ``VerifyResponse.result``, so the
  verifier itself stays untouched;
* domain errors by code, rate-limit rejections (``Throttled``) and ``Unavailable`` by
  dependency: ``api.errors``, where every domain error becomes a status;
* revocation propagation lag: ``ExportedHistogram`` replaces ``RevocationService.lag``,
  observing into a Prometheus histogram next to the domain one;
* signing-key age and time to the next rotation: ``KeyRingCollector``, computed at
  scrape time from the key manager's snapshot (no timer to keep in step).

Workers (``serve --workers N``): each worker is its own process with its own counters,
and a scrape reaches whichever worker the kernel picks. prometheus-client's multiprocess
mode solves both: the supervisor creates a fresh ``PROMETHEUS_MULTIPROC_DIR`` and passes
it to every worker; each worker's metric values live in memory-mapped files there (the
environment variable must be set before ``prometheus_client`` is imported, which it is,
since the supervisor starts the workers with it), and ``/metrics`` in any worker serves
``MultiProcessCollector``'s sum over all the files, plus the scrape-time key gauges (the
same in every worker: they share the key ring). The supervisor marks exited workers dead
and removes the directory when it stops.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from authority.domain.clock import Clock
from authority.domain.errors import AuthorityError, ErrorCode, Unavailable
from authority.domain.histogram import DEFAULT_LAG_BUCKETS, Histogram
from authority.domain.keys import KeyPolicy, KeyState
from authority.domain.throttle import Throttled
from authority.domain.write_health import KEY_ROTATION, OUTBOX_RELAY, STORE, WriteHealth
from authority.keys.snapshot import KeyRingSnapshot
from authority.v1 import token_pb2

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
VERIFY_METHOD = "/authority.v1.TokenService/Verify"

# The metrics this process records. A private registry (not prometheus-client's global
# one), so importing us never clashes with anything else in the process.
REGISTRY = CollectorRegistry()

RPC_REQUESTS = Counter(
    "authority_rpc_requests",
    "gRPC calls handled, by method and status code.",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_LATENCY = PromHistogram(
    "authority_rpc_duration_seconds",
    "gRPC call latency in the server, by method.",
    ["method"],
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
    ),
    registry=REGISTRY,
)
VERIFY_RESULTS = Counter(
    "authority_verify_results",
    "Verify answers, by result (valid, expired, revoked, bad_signature, ...).",
    ["reason"],
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "authority_rpc_errors",
    "Domain errors answered to callers, by error code.",
    ["code"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "authority_rate_limited",
    "Attempts refused by the rate limits or the lockout (Throttled).",
    registry=REGISTRY,
)
DEPENDENCY_ERRORS = Counter(
    "authority_dependency_errors",
    "Calls answered UNAVAILABLE because a dependency failed, by dependency.",
    ["dependency"],
    registry=REGISTRY,
)
REVOCATION_LAG = PromHistogram(
    "authority_revocation_propagation_lag_seconds",
    "Time from a revocation in another process to its arrival here by the fan-out.",
    buckets=DEFAULT_LAG_BUCKETS,
    registry=REGISTRY,
)
HTTP_CONNECTIONS_CLOSED = Counter(
    "authority_http_connections_closed",
    "HTTP connections the server closed to bound what peers hold, by listener and reason"
    " (header_timeout, idle_timeout, evicted, refused).",
    ["listener", "reason"],
    registry=REGISTRY,
)


def http_connection_closed(listener: str) -> Callable[[str], None]:
    """The ConnectionGuard callback for one listener."""
    return lambda reason: HTTP_CONNECTIONS_CLOSED.labels(listener, reason).inc()


RpcObserver = Callable[[grpc.StatusCode, float, Any], None]


def reason_name(result: int) -> str:
    try:
        name = token_pb2.VerifyResult.Name(result)  # type: ignore[arg-type]
    except ValueError:
        return str(result)
    return name.removeprefix("VERIFY_RESULT_").lower()


_DEPENDENCIES = (
    ("authority.store", "store"),
    ("authority.redis", "redis"),
    ("authority.keys", "keys"),
)


def dependency_of(error: BaseException) -> str:
    """Which dependency raised ``error``: the innermost of our adapter modules on its
    traceback (the error path only, so walking it costs nothing that matters)."""
    found = "other"
    tb = error.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for prefix, name in _DEPENDENCIES:
            if module.startswith(prefix):
                found = name
        tb = tb.tb_next
    return found


def count_error(error: AuthorityError) -> None:
    """Called where a domain error becomes a gRPC status."""
    RPC_ERRORS.labels(error.code.value).inc()
    if isinstance(error, Throttled):
        RATE_LIMITED.inc()
    elif error.code is ErrorCode.UNAVAILABLE:
        DEPENDENCY_ERRORS.labels(dependency_of(error)).inc()


OUTBOX_RELAY_LAG = PromHistogram(
    "authority_outbox_relay_lag_seconds",
    "From an event's commit to its consumption (audit, webhooks).",
    buckets=DEFAULT_LAG_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "authority_outbox_depth",
    "Events waiting in the outbox to be relayed (as last seen by each worker's relay).",
    multiprocess_mode="max",
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "authority_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retried, dead_lettered.",
    ["outcome"],
    registry=REGISTRY,
)


def count_webhook(outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()


class ExportedHistogram(Histogram):
    """The domain histogram, also observed into a Prometheus one (aggregated across workers,
    which a scrape-time export of one worker's domain histogram would not be)."""

    def __init__(self, exported: PromHistogram = REVOCATION_LAG) -> None:
        super().__init__(DEFAULT_LAG_BUCKETS)
        self._exported = exported

    def observe(self, value: float) -> None:
        super().observe(value)
        self._exported.observe(value)


class KeyRingCollector(Collector):
    """Signing-key gauges computed at scrape time from the key manager's snapshot."""

    def __init__(
        self, snapshot: Callable[[], KeyRingSnapshot], policy: KeyPolicy, clock: Clock
    ) -> None:
        self._snapshot = snapshot
        self._policy = policy
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        try:
            records = self._snapshot().records
        except Unavailable:
            return
        now = self._clock.now()
        policy = self._policy
        signer = policy.signing_key(records, now)
        published = GaugeMetricFamily(
            "authority_published_keys", "Keys in the JWKS (signing, pending and retired)."
        )
        published.add_metric([], len(policy.published(records, now)))
        yield published
        if signer is None:
            return
        age = GaugeMetricFamily(
            "authority_signing_key_age_seconds", "How long the current signing key has signed."
        )
        age.add_metric([], (now - signer.activates_at).total_seconds())
        yield age
        pending = [
            r.activates_at
            for r in records
            if policy.state(r, now) is KeyState.PENDING and r.activates_at > now
        ]
        next_at = min(pending, default=signer.activates_at + policy.rotation_period)
        upcoming = GaugeMetricFamily(
            "authority_signing_key_next_rotation_seconds",
            "Seconds until the next key starts signing (a published pending key, or the "
            "scheduled rotation).",
        )
        upcoming.add_metric([], max(0.0, (next_at - now).total_seconds()))
        yield upcoming


class LoopHealthCollector(Collector):
    """Background loops at scrape time (``authority.loops``): crashes in a row and in
    total, by loop. A loop that keeps crashing turns readiness off."""

    def __init__(self, health: WriteHealth) -> None:
        self._health = health

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        consecutive = GaugeMetricFamily(
            "authority_loop_failures_consecutive",
            "Crashes of a background loop in a row (0 once it has run a while again).",
            labels=["loop"],
        )
        total = CounterMetricFamily(
            "authority_loop_failures",
            "Crashes of a background loop since this process started (each was restarted).",
            labels=["loop"],
        )
        for loop, count in self._health.sources().items():
            consecutive.add_metric([loop], float(count))
            total.add_metric([loop], float(self._health.failures_total.get(loop, 0)))
        yield consecutive
        yield total


class WriteHealthCollector(Collector):
    """Write health at scrape time: consecutive and total failed writes per source, and
    whether writes count as healthy (readiness turns off when they do not)."""

    def __init__(self, health: WriteHealth) -> None:
        self._health = health

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        health = self._health
        healthy = GaugeMetricFamily(
            "authority_writes_healthy",
            "1 while no writer (store, key rotation, outbox relay) has failed "
            "AUTHORITY_WRITE_FAILURE_THRESHOLD times in a row, else 0 (readiness is off).",
        )
        healthy.add_metric([], 1.0 if health.healthy else 0.0)
        yield healthy
        consecutive = GaugeMetricFamily(
            "authority_write_failures_consecutive",
            "Failed writes in a row, by source (0 after a success).",
            labels=["source"],
        )
        total = CounterMetricFamily(
            "authority_write_failures",
            "Failed writes since this process started, by source.",
            labels=["source"],
        )
        for source in (STORE, KEY_ROTATION, OUTBOX_RELAY):
            consecutive.add_metric([source], float(health.consecutive(source)))
            total.add_metric([source], float(health.failures_total.get(source, 0)))
        yield consecutive
        yield total


class _Forward(Collector):
    """Registers one registry's metrics into another (the scrape registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        return iter(self._registry.collect())


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(collectors: Sequence[Collector] = ()) -> Callable[[], bytes]:
    """The ``/metrics`` body: this process's metrics or, in multiprocess mode, every
    worker's summed; plus ``collectors`` (computed here, at scrape time)."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)

    def render() -> bytes:
        # Every call answered before the scrape is in it. (Imported here: rpc_metrics
        # records into this module's metrics.)
        from authority.observability.rpc_metrics import fold_rpc_counts  # noqa: PLC0415

        fold_rpc_counts()
        return generate_latest(registry)

    return render
