"""Part 6 of ``make bench``: Verify throughput with 1 and 2 worker processes.

The load comes from h2load (nghttp2's C HTTP/2 load generator, Debian package
``nghttp2-client``) sending gRPC frames, because a Python load generator would
need most of a core itself and hide the second worker. Rounds interleave
``--workers 1`` and ``--workers 2`` servers, each on its own fresh data dir.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from authority_client import AuthorityClient

from authority.v1 import token_pb2
from tools.bench.cpu import process_cpu_seconds
from tools.bench.h2 import h2load, run_h2load
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served
from tools.bench.stats import grpc_frame

PASSWORD = "bench passphrase that is long enough"
VERIFY_PATH = "/authority.v1.TokenService/Verify"


@dataclass(frozen=True)
class ScalingResult:
    rates: dict[int, list[float]]  # workers -> calls/s per round
    cores: dict[int, list[float]]  # workers -> CPU cores the server processes used

    def median(self, workers: int) -> float:
        return statistics.median(self.rates[workers])


def _load(tool: str, port: int, body: Path, seconds: float, connections: int) -> float:
    return run_h2load(port, VERIFY_PATH, body, seconds, connections=connections).rate


def _cpu(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


def _serve_and_load(
    tool: str, workers: int, seconds: float, connections: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix=f"authority-bench-w{workers}-") as workdir:
        served = Served(Path(workdir) / "data", {}, workers=workers).wait_ready()
        try:
            with AuthorityClient(served.target, admin_token=BENCH_ADMIN_TOKEN) as client:
                client.create_principal("bench", PASSWORD)
                token = client.issue_with_password("bench", PASSWORD).access_token
                for _ in range(20):  # every worker may be asked; all must say VALID
                    with AuthorityClient(served.target) as fresh:
                        if fresh.verify(token).result != token_pb2.VERIFY_RESULT_VALID:
                            raise RuntimeError("the bench token did not verify")
            body = Path(workdir) / "verify.bin"
            body.write_bytes(grpc_frame(token_pb2.VerifyRequest(token=token).SerializeToString()))
            before, started = _cpu(served.pids), time.perf_counter()
            rate = _load(tool, served.grpc_port, body, seconds, connections)
            cores = (_cpu(served.pids) - before) / (time.perf_counter() - started)
            return rate, cores
        finally:
            served.stop()


def run(rounds: int, seconds: float, connections: int = 16) -> ScalingResult:
    tool = h2load()
    if tool is None:
        raise RuntimeError("h2load not found")
    rates: dict[int, list[float]] = {1: [], 2: []}
    cores: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for workers in (1, 2):
            rate, used = _serve_and_load(tool, workers, seconds, connections)
            rates[workers].append(rate)
            cores[workers].append(used)
    return ScalingResult(rates, cores)


def print_scaling_report(result: ScalingResult) -> None:
    for workers, rates in result.rates.items():
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        used = statistics.median(result.cores[workers])
        print(
            f"  --workers {workers}: {result.median(workers):>9,.0f} calls/s median  ({shown});"
            f" the server used {used:.2f} cores (warm-up included)"
        )
    ratio = result.median(2) / result.median(1)
    print(
        f"  2 workers / 1 worker: {ratio:.2f}x  (target >= 1.6x). h2load runs on the same two"
        " cores, and one worker already uses more than one core (gRPC's own threads), so"
        " the ceiling on this machine is well below 2x"
    )
