"""Part 0 of ``make bench``: the per-call tax, against the floor.

A bare ``grpc.aio`` server (``tools.bench.bare``: no interceptors, asyncio's loop) and a
real ``authority serve`` (default settings: info logging, metrics, request context, and
uvloop, the loop it picks) run pinned to one core, h2load on the other (4 connections x
16 streams, one fixed body per phase). Phases interleave in rounds: bare Health/Check,
the same bare server on uvloop (the same-loop reference: what is left is our own code's
tax), the authority's Health/Check, bare echo (Verify's body), Verify of one repeated
token, and Envoy ext_authz Check with that token. Ratios are per round, medians
reported; the targets are to the bare server, the issue's floor. h2load cannot see
``grpc-status``: the authority's ``authority_rpc_requests`` counters prove every call
answered OK.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from authority_client import AuthorityClient
from grpc_health.v1 import health_pb2

from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.v1 import token_pb2
from tools.bench.bare import HEALTH_CHECK_METHOD, BareServer
from tools.bench.cpu import process_cpu_seconds
from tools.bench.echo import ECHO_METHOD
from tools.bench.h2 import run_h2load
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served, taskset
from tools.bench.stats import grpc_frame

PASSWORD = "bench passphrase that is long enough"
VERIFY_METHOD = "/authority.v1.TokenService/Verify"
EXT_AUTHZ_METHOD = "/envoy.service.auth.v3.Authorization/Check"
SATURATED = 0.85
CONNECTIONS, STREAMS = 4, 16
# (phase, server, method, body) in the order of each round.
PHASES = (
    "bare health",
    "bare uvloop health",
    "authority health",
    "bare echo",
    "verify repeat",
    "ext_authz",
)
TARGETS = {"authority health": 0.95, "verify repeat": 0.90, "ext_authz": 0.85}
_COUNTER = re.compile(r"^authority_rpc_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.M)


@dataclass(frozen=True)
class FloorRun:
    phase: str
    round: int
    rate: float
    server_cpu: float  # CPU seconds over the whole h2load run (warm-up included)
    wall: float

    @property
    def utilisation(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def us_per_call(self) -> float:
        """Approximate: the run's CPU over its calls at the measured rate."""
        return self.server_cpu / (self.rate * self.wall) * 1e6 if self.rate else 0.0


@dataclass(frozen=True)
class FloorResult:
    runs: list[FloorRun]
    pinned: str
    errors: int

    def ratios(self, phase: str, to: str = "bare health") -> list[float]:
        by_round: dict[int, dict[str, FloorRun]] = {}
        for r in self.runs:
            by_round.setdefault(r.round, {})[r.phase] = r
        return [p[phase].rate / p[to].rate for p in by_round.values() if p[to].rate]

    def ratio(self, phase: str, to: str = "bare health") -> float:
        return statistics.median(self.ratios(phase, to))

    def cpu_ratio(self, phase: str, to: str = "bare health") -> float:
        """Median per-round bare/authority CPU per call (robust where a phase starved)."""
        by_round: dict[int, dict[str, FloorRun]] = {}
        for r in self.runs:
            by_round.setdefault(r.round, {})[r.phase] = r
        return statistics.median(
            p[to].us_per_call / p[phase].us_per_call
            for p in by_round.values()
            if p[phase].us_per_call
        )

    @property
    def starved(self) -> list[str]:
        return [
            f"{r.phase} (round {r.round}, {r.utilisation:.0%})"
            for r in self.runs
            if r.utilisation < SATURATED
        ]


def cpu_plan() -> tuple[str | None, str | None, str]:
    """(server CPUs, load CPUs, how that was arranged, for the report)."""
    cores = os.cpu_count() or 1
    if taskset() is None or cores < 2:
        return None, None, "not pinned (needs taskset and 2 CPUs)"
    load = str(cores - 1)
    return "0", load, f"server processes pinned to CPU 0, h2load to CPU {load} (taskset)"


def _ext_authz_request(token: str) -> bytes:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", "/api/orders", "api.example", "http"
    for name, value in (
        (":authority", "api.example"),
        (":method", "GET"),
        (":path", "/api/orders"),
        ("user-agent", "bench/1"),
        ("authorization", f"Bearer {token}"),
    ):
        http.headers[name] = value
    body: bytes = request.SerializeToString()
    return body


def _answered(http_port: int) -> tuple[int, int]:
    """Calls the authority answered OK and not OK, from its metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts = [
        ('code="OK"' in labels, int(float(value))) for labels, value in _COUNTER.findall(text)
    ]
    return sum(n for ok, n in counts if ok), sum(n for ok, n in counts if not ok)


def _prove(target: str, token: str, ext_authz_body: bytes) -> None:
    """Each fixed body gets the answer the phase means to time, before timing it."""
    with AuthorityClient(target) as client:
        if client.verify(token).result != token_pb2.VERIFY_RESULT_VALID:
            raise RuntimeError("the floor bench token did not verify")
    with grpc.insecure_channel(target) as channel:
        check = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            external_auth_pb2.CheckRequest.FromString(ext_authz_body)
        )
        if not check.HasField("ok_response"):
            raise RuntimeError(f"ext_authz did not allow the bench token: {check}")


def run(rounds: int, seconds: float, warmup: float) -> FloorResult:
    server_cpus, load_cpus, how = cpu_plan()
    with tempfile.TemporaryDirectory(prefix="authority-bench-floor-") as workdir:
        work = Path(workdir)
        bare = BareServer(server_cpus)
        same_loop = BareServer(server_cpus, loop="uvloop")
        served: Served | None = None
        try:
            served = Served(work / "data", {}, cpus=server_cpus).wait_ready()
            with AuthorityClient(served.target, admin_token=BENCH_ADMIN_TOKEN) as client:
                client.create_principal("bench", PASSWORD)
                token = client.issue_with_password("bench", PASSWORD).access_token
            bodies = {
                "health": health_pb2.HealthCheckRequest().SerializeToString(),
                "verify": token_pb2.VerifyRequest(token=token).SerializeToString(),
                "ext_authz": _ext_authz_request(token),
            }
            _prove(served.target, token, bodies["ext_authz"])
            files = {}
            for name, body in bodies.items():
                files[name] = work / f"{name}.bin"
                files[name].write_bytes(grpc_frame(body))
            plan = {
                "bare health": (bare.port, bare.pid, HEALTH_CHECK_METHOD, files["health"]),
                "bare uvloop health": (
                    same_loop.port,
                    same_loop.pid,
                    HEALTH_CHECK_METHOD,
                    files["health"],
                ),
                "authority health": (
                    served.grpc_port,
                    served.pids[0],
                    HEALTH_CHECK_METHOD,
                    files["health"],
                ),
                "bare echo": (bare.port, bare.pid, ECHO_METHOD, files["verify"]),
                "verify repeat": (served.grpc_port, served.pids[0], VERIFY_METHOD, files["verify"]),
                "ext_authz": (
                    served.grpc_port,
                    served.pids[0],
                    EXT_AUTHZ_METHOD,
                    files["ext_authz"],
                ),
            }
            ok_before, errors_before = _answered(served.http_port)
            timed = 0
            runs: list[FloorRun] = []
            for round_number in range(1, rounds + 1):
                for phase in PHASES:
                    port, pid, method, body = plan[phase]
                    cpu_before, started = process_cpu_seconds(pid) or 0.0, time.perf_counter()
                    h2 = run_h2load(
                        port,
                        method,
                        body,
                        seconds,
                        connections=CONNECTIONS,
                        streams=STREAMS,
                        warmup=warmup,
                        cpus=load_cpus,
                    )
                    wall = time.perf_counter() - started
                    cpu = (process_cpu_seconds(pid) or 0.0) - cpu_before
                    runs.append(FloorRun(phase, round_number, h2.rate, cpu, wall))
                    timed += h2.succeeded if port == served.grpc_port else 0
                    print(_row(runs[-1]), flush=True)
                    if not served.alive():
                        raise RuntimeError(f"the authority died:\n{served.log_tail()}")
            ok_after, errors_after = _answered(served.http_port)
            errors = errors_after - errors_before
            if ok_after - ok_before < timed:  # the counters cover the warm-ups too
                raise RuntimeError(
                    f"the authority counted {ok_after - ok_before} OK calls, h2load {timed}"
                )
        finally:
            if served is not None:
                served.stop()
            bare.stop()
            same_loop.stop()
    return FloorResult(runs, how, errors)


def _row(r: FloorRun) -> str:
    return (
        f"  {r.round:>5}  {r.phase:<17} {r.rate:>9,.0f} {r.us_per_call:>12.0f}"
        f" {r.utilisation:>11.0%}"
    )


def print_header() -> None:
    print(f"  {'round':>5}  {'phase':<17} {'calls/s':>9} {'server us/call':>12} {'server CPU':>11}")


def print_floor_report(result: FloorResult) -> None:
    print()
    print(
        f"  {'ratio to bare Health/Check (median of rounds)':<48} {'calls/s':>8}"
        f" {'':<6} {'CPU/call':>8}  target"
    )
    for phase, target in TARGETS.items():
        t, c = result.ratio(phase), result.cpu_ratio(phase)
        print(
            f"  {phase:<48} {t:>7.2f}x {'meets' if t >= target else 'BELOW':<6}"
            f" {c:>7.2f}x  >= {target:.2f}x"
        )
    t, c = (
        result.ratio("verify repeat", "bare echo"),
        result.cpu_ratio("verify repeat", "bare echo"),
    )
    print(f"  {'verify repeat / bare echo (same request)':<48} {t:>7.2f}x {'':<6} {c:>7.2f}x")
    print(
        f"  same loop, for reference (to the bare server on uvloop, as the authority runs;"
        f" bare uvloop / bare asyncio {result.ratio('bare uvloop health'):.2f}x):"
    )
    for phase in TARGETS:
        t, c = (
            result.ratio(phase, "bare uvloop health"),
            result.cpu_ratio(phase, "bare uvloop health"),
        )
        print(f"  {'  ' + phase:<48} {t:>7.2f}x {'':<6} {c:>7.2f}x")
    print(f"  calls the authority answered not OK (its metrics): {result.errors}")
    if result.starved:
        print(
            f"  WARNING: server CPU below {SATURATED:.0%} of one core in: "
            + ", ".join(result.starved)
            + " -- the load generator starved it there; trust the CPU/call ratios"
        )
