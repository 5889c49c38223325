"""Metrics: counters move after real RPCs, /metrics parses, and workers are summed."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from authority.api.call_pipeline import CallPipeline
from authority.api.handler_wrapping import Registrar
from authority.domain.errors import Unavailable
from authority.domain.throttle import Throttled
from authority.observability import metrics, rpc_metrics
from authority.v1 import token_pb2
from tests.integration.conftest import start_server  # noqa: F401 - the fixture
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"
VERIFY = "authority.v1.TokenService/Verify"
ISSUE = "authority.v1.TokenService/Issue"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> tuple[Samples, str]:
    """Every sample of one scrape, keyed by name and sorted labels (the parser must accept
    the whole body, or this raises)."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        content_type = response.headers["Content-Type"]
        body = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, content_type


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- unit: the per-call recorder ------------------------------------------------------------


def _rpc_samples(method: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = metrics.exposition()().decode()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.labels.get("method") == method:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(
                [grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNKNOWN]
            ),
            st.one_of(
                st.sampled_from([0.0, 0.0001, 0.00025, 0.001, 5.0, 7.5]),  # on and past bounds
                st.floats(min_value=0, max_value=10, allow_nan=False),
            ),
        ),
        max_size=40,
    )
)
@settings(max_examples=60, deadline=None)
def test_a_scrape_counts_every_call_as_observing_each_one_would(
    calls: list[tuple[grpc.StatusCode, float]],
) -> None:
    """The recorder keeps counts in plain integers and folds them into Prometheus's
    values before a scrape: the scrape must read exactly what observing each call into
    the Prometheus children directly reads (counts by code, every bucket, the sum)."""
    method = f"/test.Tally/M{next(_METHODS)}"
    name = method.lstrip("/")
    observe = rpc_metrics.rpc_observer(method)
    reference = metrics.CollectorRegistry()
    requests = metrics.Counter(
        "authority_rpc_requests", "reference", ["method", "code"], registry=reference
    )
    latency = metrics.PromHistogram(
        "authority_rpc_duration_seconds",
        "reference",
        ["method"],
        buckets=metrics.RPC_LATENCY._upper_bounds,
        registry=reference,
    )
    latency.labels(name)  # the recorder binds its latency child up front
    for index, (code, elapsed) in enumerate(calls):
        observe(code, elapsed, None)
        requests.labels(name, code.name).inc()
        latency.labels(name).observe(elapsed)
        if index == len(calls) // 2:  # a scrape in the middle folds what came before
            _rpc_samples(name)
    expected = {}
    for family in reference.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                expected[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    got = {key: v for key, v in _rpc_samples(name).items() if not key[0].endswith("_created")}
    assert got.keys() == expected.keys()
    for key, wanted in expected.items():
        assert got[key] == pytest.approx(wanted, rel=1e-9, abs=1e-12), key


_METHODS = itertools.count()


async def test_a_scrape_right_after_calls_counts_every_one_of_them() -> None:
    """The call wrapper only appends a call to its method's lists; the counting happens
    when they are folded, which a scrape does first: a scrape right after N calls (no
    wait for the fold timer) counts exactly N, by code, in the histogram and by result."""
    results = [token_pb2.VERIFY_RESULT_VALID, token_pb2.VERIFY_RESULT_EXPIRED]

    async def verify(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no")
        return token_pb2.VerifyResponse(result=results[len(request) % 2])

    handler = grpc.method_handlers_generic_handler(
        "authority.v1.TokenService",
        {"Verify": grpc.unary_unary_rpc_method_handler(verify, bytes, _serialize)},
    )
    server = grpc.aio.server()
    Registrar(server, CallPipeline(admin=None).wrap).add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        before = _rpc_samples(VERIFY)
        reasons_before = _reason_samples()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/" + VERIFY, lambda b: b, lambda b: b)
            for round_ in range(2):  # a second batch after a scrape counts from there
                requests = [b"a", b"bb", b"missing", b"ccc"] * (3 + round_)
                for request in requests:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await call(request)
                after = _rpc_samples(VERIFY)
                reasons = _reason_samples()

                calls = len(requests)
                moved = _moved(before, after)
                assert moved("authority_rpc_requests_total", code="OK") == calls * 3 / 4
                assert moved("authority_rpc_requests_total", code="NOT_FOUND") == calls / 4
                assert moved("authority_rpc_duration_seconds_count") == calls
                assert moved("authority_rpc_duration_seconds_bucket", le="+Inf") == calls
                assert reasons["valid"] - reasons_before.get("valid", 0.0) == calls / 4
                assert reasons["expired"] - reasons_before.get("expired", 0.0) == calls / 2
                before, reasons_before = after, reasons
    finally:
        await server.stop(None)


def _moved(before: Samples, after: Samples) -> Callable[..., float]:
    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"method": VERIFY, **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    return moved


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _reason_samples() -> dict[str, float]:
    body = metrics.exposition()().decode()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "authority_verify_results_total":
                found[sample.labels["reason"]] = sample.value
    return found


# -- unit: the error path -----------------------------------------------------------------


def _raise_from(module: str) -> Unavailable:
    """An Unavailable raised by code that lives in ``module`` (as the adapters' would be)."""
    namespace = {"__name__": module, "Unavailable": Unavailable}
    exec("def fail():\n    raise Unavailable('down')\n", namespace)
    try:
        namespace["fail"]()  # type: ignore[operator]
    except Unavailable as error:
        return error
    raise AssertionError("unreachable")


def test_unavailable_is_counted_by_the_dependency_that_raised_it() -> None:
    before = {
        name: metrics.REGISTRY.get_sample_value(
            "authority_dependency_errors_total", {"dependency": name}
        )
        or 0.0
        for name in ("store", "redis", "other")
    }
    metrics.count_error(_raise_from("authority.store.postgres"))
    metrics.count_error(_raise_from("authority.redis.attempts"))
    metrics.count_error(Unavailable("not raised anywhere"))
    for name in ("store", "redis", "other"):
        after = metrics.REGISTRY.get_sample_value(
            "authority_dependency_errors_total", {"dependency": name}
        )
        assert after == before[name] + 1


def test_throttled_is_counted_as_a_rate_limit_rejection() -> None:
    before = metrics.REGISTRY.get_sample_value("authority_rate_limited_total") or 0.0
    metrics.count_error(Throttled(1.0))
    assert metrics.REGISTRY.get_sample_value("authority_rate_limited_total") == before + 1
    assert metrics.REGISTRY.get_sample_value(
        "authority_rpc_errors_total", {"code": "resource_exhausted"}
    )


def test_the_revocation_lag_is_exported_next_to_the_domain_histogram() -> None:
    lag = metrics.ExportedHistogram()
    before = metrics.REGISTRY.get_sample_value("authority_revocation_propagation_lag_seconds_count")
    lag.observe(0.003)
    assert lag.count == 1 and lag.quantile(0.5) == 0.005
    after = metrics.REGISTRY.get_sample_value("authority_revocation_propagation_lag_seconds_count")
    assert after == (before or 0.0) + 1


# -- a real server ------------------------------------------------------------------------


@pytest.mark.integration
def test_counters_move_after_rpcs_and_the_scrape_parses(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
) -> None:
    server = start_server(AUTHORITY_LOCKOUT_THRESHOLD="2")
    before, content_type = scrape(server)
    assert content_type.startswith("text/plain")
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        pair = client.issue_with_password("alice", PASSWORD)
        for _ in range(5):
            assert client.verify(pair.access_token).result == token_pb2.VERIFY_RESULT_VALID
        client.verify("not a token")
        client.revoke(access_token=pair.access_token)
        assert client.verify(pair.access_token).result == token_pb2.VERIFY_RESULT_REVOKED
        codes = []
        for _ in range(4):  # failed logins until the lockout answers
            with pytest.raises(grpc.RpcError) as failed:
                client.issue_with_password("alice", "not the passphrase at all")
            codes.append(failed.value.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    after, _ = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("authority_rpc_requests_total", method=VERIFY, code="OK") == 7
    assert moved("authority_rpc_requests_total", method=ISSUE, code="OK") == 1
    assert moved("authority_rpc_requests_total", method=ISSUE, code="UNAUTHENTICATED") >= 1
    assert moved("authority_rpc_requests_total", method=ISSUE, code="RESOURCE_EXHAUSTED") >= 1
    assert moved("authority_rpc_duration_seconds_count", method=VERIFY) == 7
    assert value(after, "authority_rpc_duration_seconds_bucket", method=VERIFY, le="+Inf") >= 7
    assert moved("authority_verify_results_total", reason="valid") == 5
    assert moved("authority_verify_results_total", reason="malformed") == 1
    assert moved("authority_verify_results_total", reason="revoked") == 1
    assert moved("authority_rate_limited_total") >= 1
    assert moved("authority_rpc_errors_total", code="unauthenticated") >= 1
    # Key gauges, computed at scrape time.
    assert value(after, "authority_published_keys") >= 1
    assert value(after, "authority_signing_key_age_seconds") >= 0
    assert value(after, "authority_signing_key_next_rotation_seconds") > 0
    assert ("authority_revocation_propagation_lag_seconds_count", ()) in after


def _multiproc_dir(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(metrics.MULTIPROC_ENV.encode() + b"="):
            return entry.split(b"=", 1)[1].decode()
    raise AssertionError("the worker has no multiprocess directory")


@pytest.mark.integration
def test_workers_are_summed_in_every_scrape(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
) -> None:
    server = start_server(workers=2)
    directories = {_multiproc_dir(pid) for pid in server.worker_pids}
    assert len(directories) == 1  # one shared directory, from the supervisor
    directory = directories.pop()
    assert os.path.isdir(directory)
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        token = client.issue_with_password("alice", PASSWORD).access_token
    calls = 20
    for _ in range(calls):  # a fresh connection each: the kernel spreads them
        with server.client() as client:
            assert client.verify(token).result == token_pb2.VERIFY_RESULT_VALID
    # Every scrape (a fresh connection, whichever worker takes it) sees all of them.
    for _ in range(8):
        samples, _ = scrape(server)
        assert value(samples, "authority_rpc_requests_total", method=VERIFY, code="OK") == calls
        assert value(samples, "authority_verify_results_total", reason="valid") == calls
        assert value(samples, "authority_signing_key_age_seconds") >= 0
    assert server.terminate() == 0
    assert not os.path.exists(directory), "the supervisor removes the directory at stop"


@pytest.mark.integration
def test_the_outbox_relay_lag_is_exported(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
) -> None:
    server = start_server()
    with server.client() as client:
        client.create_principal("carol", PASSWORD)  # principal.created goes through the outbox
    deadline = time.monotonic() + 10
    while True:
        samples, _ = scrape(server)
        consumed = value(samples, "authority_outbox_relay_lag_seconds_count")
        if consumed >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert consumed >= 1
    assert value(samples, "authority_outbox_relay_lag_seconds_sum") >= 0
    assert ("authority_outbox_depth", ()) in samples
