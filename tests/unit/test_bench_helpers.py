"""The bench's pure helpers: what its percentiles, frames and verdicts mean."""

from __future__ import annotations

import struct

import pytest

from tools.bench.h2 import parse_h2load
from tools.bench.stats import grpc_frame, percentile, weighted_plan
from tools.bench.targets import Target

H2LOAD_OUTPUT = """
finished in 3.00s, 5151.50 req/s, 295.29KB/s
requests: 10303 total, 10303 started, 10303 done, 10303 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 10303 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 1001)]
    assert percentile(samples, 0.5) == 500.0
    assert percentile(samples, 0.99) == 990.0
    assert percentile(samples, 0.999) == 999.0
    assert percentile(samples, 1.0) == 1000.0
    assert percentile([7.0], 0.999) == 7.0
    # With fewer samples than 1/(1-q), the tail quantile is the maximum.
    assert percentile([1.0, 2.0, 3.0], 0.999) == 3.0


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0.0)


def test_grpc_frame_is_flag_length_message() -> None:
    assert grpc_frame(b"") == b"\x00\x00\x00\x00\x00"
    frame = grpc_frame(b"abc")
    assert frame[0] == 0
    assert struct.unpack(">I", frame[1:5]) == (3,)
    assert frame[5:] == b"abc"


def test_weighted_plan_keeps_the_proportions_everywhere() -> None:
    mix = [("verify", 90), ("refresh", 5), ("issue", 4), ("revoke", 1)]
    plan = weighted_plan(mix, 1000)
    assert [plan.count(name) for name, _ in mix] == [900, 50, 40, 10]
    # Spread evenly: every window of 100 calls already holds the mix.
    first = plan[:100]
    assert [first.count(name) for name, _ in mix] == [90, 5, 4, 1]
    with pytest.raises(ValueError, match="weights"):
        weighted_plan([("a", 0)], 1)


def test_parse_h2load_reads_a_clean_run() -> None:
    run = parse_h2load(H2LOAD_OUTPUT)
    assert (run.rate, run.done, run.succeeded) == (5151.5, 10303, 10303)


def test_parse_h2load_refuses_a_run_with_failures() -> None:
    failed = H2LOAD_OUTPUT.replace("10303 succeeded, 0 failed", "10300 succeeded, 3 failed")
    with pytest.raises(RuntimeError, match="did not complete cleanly"):
        parse_h2load(failed)
    with pytest.raises(RuntimeError, match="not understood"):
        parse_h2load("connect: Connection refused")


def test_target_verdicts() -> None:
    assert Target("ratio", 0.96, 0.95).verdict == "meets"
    assert Target("ratio", 0.94, 0.95).verdict == "MISSES"
    assert Target("cost", 2.5, 2.5, at_least=False).verdict == "meets"
    assert Target("cost", 2.6, 2.5, at_least=False).verdict == "MISSES"
    assert Target("skipped part", None, 1.0).verdict == "skipped"
    assert "1,168 B" in Target("bytes", 1168.0, 2048, at_least=False, unit="B").row()
