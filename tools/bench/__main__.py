"""``make bench``: what Verify costs next to a bare RPC, and what decoding costs next to Ed25519.

Only ratios measured side by side in one run are reported: the machine is shared and
noisy, so absolute numbers move between runs while ratios mostly do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from tools.bench import client, floor, local, pgrefresh, propagation, scaling, sustained
from tools.bench.bare import BareServer
from tools.bench.h2 import h2load
from tools.bench.lifecycle import LifecycleResult, measure_lifecycle, print_lifecycle_report
from tools.bench.load import (
    VERIFY_METHOD,
    LoadGenerator,
    PhaseResult,
    Pool,
    check_echo,
    check_valid,
    median_or_none,
)
from tools.bench.processes import pinned
from tools.bench.server import ECHO_METHOD
from tools.bench.targets import Target, print_targets

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PHASES = ("bare-echo", "echo", "verify-miss", "verify-hit")
TARGETS = {"verify-miss": 0.75, "verify-hit": 0.90}
# Below this share of one core the server was waiting for the load generator.
SATURATED = 0.85
# An upper bound on cache-miss Verify calls/s here, to size the never-verified pool.
MISS_RATE_BOUND = 6000
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
LIFECYCLE_CONCURRENCY = 16
NO_H2LOAD = "h2load not found (Debian: apt-get install nghttp2-client)"

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "rounds": 3,
        "duration": 3.0,
        "warmup": 0.5,
        "local_rounds": 5,
        "local_seconds": 0.5,
        "revocations": 1000,
        "sustained_seconds": 60.0,
        "probe_seconds": 5.0,
        "fill": 65_536,
    },
    "quick": {
        "rounds": 1,
        "duration": 1.0,
        "warmup": 0.3,
        "local_rounds": 3,
        "local_seconds": 0.2,
        "revocations": 100,
        "sustained_seconds": 3.0,
        "probe_seconds": 1.0,
        "fill": 1024,
    },
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument("--rounds", type=int, help="server rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per phase (3.0)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each phase (0.5)")
    parser.add_argument("--concurrency", type=int, default=48, help="calls in flight (48)")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (4)")
    parser.add_argument("--fresh", type=int, help="never-verified tokens (default: sized to run)")
    parser.add_argument("--repeat", type=int, default=100, help="cache-hit tokens (100)")
    parser.add_argument("--local-rounds", type=int, help="client-side rounds (5, quick 3)")
    parser.add_argument("--local-seconds", type=float, help="seconds per variant per round (0.5)")
    parser.add_argument(
        "--revocations", type=int, help="revocations timed across replicas (1000, quick 100)"
    )
    parser.add_argument(
        "--sustained-seconds", type=float, help="mixed load at 80%% of the maximum (60, quick 3)"
    )
    parser.add_argument("--probe-seconds", type=float, help="maximum of the mix probe (5, quick 1)")
    parser.add_argument(
        "--fill", type=int, help="never-seen tokens per worker's verify cache (65536, quick 1024)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("AUTHORITY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL for the replica part (a scratch database is created and dropped)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AUTHORITY_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for the replica part (keys under a scratch prefix)",
    )
    args = parser.parse_args(argv)
    for name, value in PROFILES["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.fresh is None:
        needed = args.rounds * (args.warmup + args.duration) * MISS_RATE_BOUND
        args.fresh = max(5_000, math.ceil(needed / 1000) * 1000)
    for name in ("rounds", "concurrency", "channels", "repeat", "local_rounds", "fresh", "fill"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("duration", "local_seconds", "probe_seconds"):
        if not 0 < getattr(args, name) <= 60:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 60]")
    if not 0 < args.sustained_seconds <= 600:
        parser.error("--sustained-seconds must be in (0, 600]")
    if not 0 <= args.warmup <= 10:
        parser.error("--warmup must be in [0, 10]")
    return args


def rerun_command(args: argparse.Namespace) -> str:
    if args.quick:
        return ".venv/bin/python -m tools.bench --quick"
    flags = [
        f"--rounds {args.rounds}",
        f"--duration {args.duration:g}",
        f"--warmup {args.warmup:g}",
        f"--concurrency {args.concurrency}",
        f"--channels {args.channels}",
    ]
    return "make bench   # = .venv/bin/python -m tools.bench " + " ".join(flags)


# -- the server process ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    fresh: list[str]
    repeat: list[str]
    mint_seconds: float
    cache_size: int


class ServerProcess:
    """The server subprocess; ``stop`` always ends it (SIGTERM, then SIGKILL after a timeout)."""

    def __init__(self, workdir: Path, fresh: int, repeat: int, cpus: str | None = None) -> None:
        self._ready = workdir / "ready.json"
        self._log_path = workdir / "server.log"
        data_dir = workdir / "data"
        data_dir.mkdir()
        command = [
            sys.executable,
            "-m",
            "tools.bench.server",
            f"--out={self._ready}",
            f"--data-dir={data_dir}",
            f"--fresh={fresh}",
            f"--repeat={repeat}",
            "--watch-stdin",
        ]
        with open(self._log_path, "wb") as log:
            # stdin stays open: its EOF tells the server that we are gone, however we died.
            self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                pinned(command, cpus), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self._process.poll() is None

    def wait_ready(self) -> ServerInfo:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready.exists():
            if not self.alive():
                raise RuntimeError(
                    f"the server exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {READY_TIMEOUT:g} s")
            time.sleep(0.05)
        document = json.loads(self._ready.read_text(encoding="utf-8"))
        return ServerInfo(
            pid=int(document["pid"]),
            port=int(document["grpc_port"]),
            fresh=list(document["fresh"]),
            repeat=list(document["repeat"]),
            mint_seconds=float(document["mint_seconds"]),
            cache_size=int(document["verify_cache_size"]),
        )

    def stop(self) -> None:
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- part 1: the server ---------------------------------------------------------------------


async def measure_server(
    info: ServerInfo, args: argparse.Namespace, server: ServerProcess, bare: BareServer
) -> tuple[list[PhaseResult], int, list[str]]:
    """Rounds of bare-echo (the floor process), echo, verify-miss, verify-hit; returns
    results and every failure."""
    load = LoadGenerator(info.port, info.pid, channels=args.channels, concurrency=args.concurrency)
    floor = LoadGenerator(bare.port, bare.pid, channels=args.channels, concurrency=args.concurrency)
    fresh = Pool(info.fresh, cycle=False)
    plan = (
        ("bare-echo", floor, ECHO_METHOD, Pool(info.repeat, cycle=True), check_echo),
        ("echo", load, ECHO_METHOD, Pool(info.repeat, cycle=True), check_echo),
        ("verify-miss", load, VERIFY_METHOD, fresh, check_valid),
        ("verify-hit", load, VERIFY_METHOD, Pool(info.repeat, cycle=True), check_valid),
    )
    results: list[PhaseResult] = []
    try:
        await load.verify_all(info.repeat)  # fills the cache for the hit phase
        # Unmeasured: connect every channel and warm both paths, so round 1 is not penalised.
        for _, generator, method, pool, check in (plan[0], plan[1], plan[3]):
            await generator.run_phase(
                "settle", 0, method, pool, check, warmup=0.0, duration=2 * args.warmup
            )
        for round_number in range(1, args.rounds + 1):
            for phase, generator, method, pool, check in plan:
                result = await generator.run_phase(
                    phase,
                    round_number,
                    method,
                    pool,
                    check,
                    warmup=args.warmup,
                    duration=args.duration,
                )
                results.append(result)
                print(_round_row(result), flush=True)
                if not server.alive():
                    raise RuntimeError(f"the server died:\n{server.log_tail()}")
    finally:
        await load.close()
        await floor.close()
    print(f"  verify-miss used {fresh.used:,} of {len(info.fresh):,} fresh tokens, each once")
    failures = load.failures.count + floor.failures.count
    return results, failures, load.failures.samples + floor.failures.samples


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _round_row(r: PhaseResult) -> str:
    row = (
        f"  {r.round:>5}  {r.phase:<12} {r.calls_per_second:>9,.0f} {_us(r.server_us_per_call):>12}"
        f" {_pct(r.server_utilisation):>11} {_pct(r.client_utilisation):>11} {r.failures:>9}"
    )
    return row + (f"  ({r.note})" if r.note else "")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return ""
    return "meets" if value >= target else "BELOW"


@dataclass(frozen=True)
class ServerSummary:
    throughput: dict[str, float | None]  # phase -> median per-round calls/s ratio to echo
    cpu: dict[str, float | None]  # phase -> median per-round echo/verify CPU-per-call ratio
    starved: list[str]
    failures: int
    miss_extra_us: float | None  # median per round: verify-miss minus bare-echo CPU per call
    bare_us: float | None  # median bare-echo server CPU per call


def summarise_server(results: list[PhaseResult], failures: int) -> ServerSummary:
    by_round: dict[int, dict[str, PhaseResult]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.phase] = r
    throughput: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    for phase in TARGETS:
        t_ratios: list[float | None] = []
        c_ratios: list[float | None] = []
        for phases in by_round.values():
            echo, other = phases["echo"], phases[phase]
            t_ratios.append(
                other.calls_per_second / echo.calls_per_second if echo.calls_per_second else None
            )
            e_us, o_us = echo.server_us_per_call, other.server_us_per_call
            c_ratios.append(e_us / o_us if e_us and o_us else None)
        throughput[phase] = median_or_none(t_ratios)
        cpu[phase] = median_or_none(c_ratios)
    extra: list[float | None] = []
    for phases in by_round.values():
        miss, bare = (
            phases["verify-miss"].server_us_per_call,
            phases["bare-echo"].server_us_per_call,
        )
        extra.append(miss - bare if miss is not None and bare is not None else None)
    bare_us = median_or_none([p["bare-echo"].server_us_per_call for p in by_round.values()])
    starved = [
        f"{r.phase} (round {r.round}, {_pct(r.server_utilisation)})"
        for r in results
        if r.server_utilisation is not None and r.server_utilisation < SATURATED
    ]
    return ServerSummary(throughput, cpu, starved, failures, median_or_none(extra), bare_us)


def print_server_report(results: list[PhaseResult], summary: ServerSummary) -> None:
    print()
    print(f"  median over {max(r.round for r in results)} round(s):")
    print(
        f"  {'phase':<12} {'calls/s':>9} {'server us/call':>15} {'server CPU':>11}"
        f" {'client CPU':>11} {'client us/call':>15}"
    )
    for phase in PHASES:
        rows = [r for r in results if r.phase == phase]
        client_us = [r.client_cpu / r.calls * 1e6 if r.calls else None for r in rows]
        print(
            f"  {phase:<12} {median_or_none([r.calls_per_second for r in rows]) or 0:>9,.0f}"
            f" {_us(median_or_none([r.server_us_per_call for r in rows])):>15}"
            f" {_pct(median_or_none([r.server_utilisation for r in rows])):>11}"
            f" {_pct(median_or_none([r.client_utilisation for r in rows])):>11}"
            f" {_us(median_or_none(client_us)):>15}"
        )
    print()
    print(
        f"  {'ratio (median of rounds)':<26} {'calls/s':>8} {'':<6}"
        f" {'echo/verify server CPU per call':>32} {'':<6} target"
    )
    for phase, target in TARGETS.items():
        t, c = summary.throughput[phase], summary.cpu[phase]
        print(
            f"  {phase + ' / echo':<26} {_ratio(t):>8} {_verdict(t, target):<6}"
            f" {_ratio(c):>32} {_verdict(c, target):<6} >= {target:.2f}x"
        )
    if summary.starved:
        print()
        print(
            f"  WARNING: server CPU below {SATURATED:.0%} of one core in: "
            + ", ".join(summary.starved)
        )
        print(
            "  The load generator was the bottleneck there, so the calls/s ratios are"
            " compressed toward 1; the CPU-per-call ratios are the trustworthy ones."
        )


# -- part 2: client-side decoding -----------------------------------------------------------


def print_local_report(results: list[local.VariantResult]) -> None:
    print(f"  {'variant':<40} {'ops/s':>9} {'us/op':>7} {'vs raw':>7}")
    for r in results:
        failed = f"  FAILURES: {r.failures}" if r.failures else ""
        print(
            f"  {r.name:<40} {r.ops_per_second:>9,.0f} {1e6 / r.ops_per_second:>7.1f}"
            f" {_ratio(r.ratio_to_raw):>7}{failed}"
        )


# -- the run --------------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (e.g. make being stopped) unwinds like Ctrl-C, so the server is still ended."""
    raise KeyboardInterrupt


@dataclass
class LaterParts:
    """Parts 4 to 8; None where a part was skipped (it printed why)."""

    client_local: client.LocalResult
    propagated: propagation.PropagationResult | None = None
    scaled: scaling.ScalingResult | None = None
    refreshed: pgrefresh.RefreshResult | None = None
    sustained: sustained.SustainedResult | None = None


def run_later_parts(args: argparse.Namespace) -> LaterParts:
    """Parts 4 to 8, each skipped (saying why) where this machine cannot run it."""
    print()
    print(
        "4. Revocation propagation across three replicas (PostgreSQL + Redis): from Revoke"
        " returning on A until B and C answer REVOKED"
    )
    problem = propagation.services_problem(args.database_url, args.redis_url)
    propagated = None
    started = time.monotonic()
    if problem:
        print(f"  skipped: {problem}; set --database-url/--redis-url to run it")
    else:
        propagated = propagation.run(args.database_url, args.redis_url, args.revocations)
        propagation.print_propagation_report(propagated)
        _took(started)

    print()
    print("5. Client library: local verification vs raw Ed25519, and the watch stream")
    started = time.monotonic()
    client_local = client.run_local(args.local_rounds, args.local_seconds)
    client_watch = client.run_watch(args.revocations)
    client.print_client_report(client_local, client_watch)
    _took(started)
    later = LaterParts(client_local, propagated)

    print()
    print("6. Many cores: Verify (repeat token) with --workers 1 and 2, load from h2load")
    if h2load() is None:
        print(f"  skipped: {NO_H2LOAD}")
    else:
        started = time.monotonic()
        later.scaled = scaling.run(args.rounds, args.duration)
        scaling.print_scaling_report(later.scaled)
        _took(started)

    print()
    print(
        f"7. Refresh on PostgreSQL vs a bare asyncpg transaction of as many statements;"
        f" {args.rounds} round(s) of {args.duration:g} s each, {pgrefresh.CONCURRENCY} in flight"
    )
    if problem:
        print(f"  skipped: {problem}; set --database-url/--redis-url to run it")
    else:
        started = time.monotonic()
        later.refreshed = pgrefresh.run(
            args.database_url, args.redis_url, args.rounds, args.duration
        )
        pgrefresh.print_refresh_report(later.refreshed)
        _took(started)

    print()
    print(
        f"8. Sustained mixed load on --workers 2 (PostgreSQL + Redis) at"
        f" {sustained.LOAD_SHARE:.0%} of its maximum for {args.sustained_seconds:g} s;"
        " memory per cached token"
    )
    if problem:
        print(f"  skipped: {problem}; set --database-url/--redis-url to run it")
    else:
        started = time.monotonic()
        later.sustained = sustained.run(
            args.database_url,
            args.redis_url,
            args.sustained_seconds,
            args.probe_seconds,
            args.fill,
        )
        sustained.print_sustained_report(later.sustained)
        _took(started)
    return later


def _took(started: float) -> None:
    print(f"  (this part took {time.monotonic() - started:.0f} s)")


def print_banner() -> None:
    load_avg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"authority bench  {datetime.now(UTC):%Y-%m-%d %H:%M}Z  {os.cpu_count()} CPUs"
        f"  load avg {load_avg}  Python {platform.python_version()}"
        f"  grpcio {version('grpcio')}  cryptography {version('cryptography')}"
        f"  PyJWT {version('pyjwt')}"
    )
    print("Ratios only: absolute numbers on this shared machine are not comparable across runs.")
    print()


def run_floor_part(args: argparse.Namespace) -> floor.FloorResult | None:
    """Part 0, skipped (saying why) without h2load."""
    print(
        f"0. The floor: a bare grpc.aio server process (no interceptors) next to `authority"
        f" serve` (default settings); h2load, {floor.CONNECTIONS} connections x {floor.STREAMS}"
        f" streams, {0.5 if args.quick else 1:g} s warm-up + {args.duration:g} s per phase,"
        f" {args.rounds} round(s)"
    )
    if h2load() is None:
        print(f"  skipped: {NO_H2LOAD}")
        return None
    print(f"  {floor.cpu_plan()[2]}")
    floor.print_header()
    started = time.monotonic()
    floored = floor.run(args.rounds, args.duration, 0.5 if args.quick else 1.0)
    floor.print_floor_report(floored)
    _took(started)
    return floored


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    print_banner()
    floored = run_floor_part(args)
    print()
    print(
        f"1. Server: Verify vs a bare echo RPC in one server process; {args.rounds} round(s) of"
        f" bare-echo (the floor process), echo, verify-miss, verify-hit, each {args.warmup:g} s"
        f" warm-up + {args.duration:g} s; {args.concurrency} calls in flight on"
        f" {args.channels} channels"
    )
    part_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="authority-bench-") as workdir:
        server_cpus, load_cpus, how = floor.cpu_plan()
        server = ServerProcess(Path(workdir), args.fresh, args.repeat, server_cpus)
        bare = BareServer(server_cpus)
        own_cpus = os.sched_getaffinity(0)
        try:
            if load_cpus is not None:  # this process is part 1's load generator
                os.sched_setaffinity(0, {int(load_cpus)})
            print(f"  {how}; the Python load generator (this process) with h2load's CPU")
            info = server.wait_ready()
            print(
                f"  server pid {info.pid}, port {info.port}; minted {len(info.fresh):,} fresh +"
                f" {len(info.repeat)} repeat tokens in {info.mint_seconds:.1f} s"
                f" (verify cache holds {info.cache_size:,})"
            )
            print(
                "  server/client CPU: share of one core (server: every thread of its PID, from"
                " /proc); server us/call: its CPU time per successful call"
            )
            print(
                f"  {'round':>5}  {'phase':<12} {'calls/s':>9} {'server us/call':>12}"
                f" {'server CPU':>11} {'client CPU':>11} {'failures':>9}"
            )
            results, failures, samples = asyncio.run(measure_server(info, args, server, bare))
            print(
                f"  (then part 3: the token lifecycle, {args.duration:g} s per operation,"
                f" {LIFECYCLE_CONCURRENCY} calls in flight)"
            )
            lifecycle = asyncio.run(
                measure_lifecycle(
                    info.port,
                    info.pid,
                    duration=args.duration,
                    concurrency=LIFECYCLE_CONCURRENCY,
                    bare=(bare.port, bare.pid),
                )
            )
            lifecycle_done = time.monotonic()
        finally:
            os.sched_setaffinity(0, own_cpus)
            server.stop()
            bare.stop()
    summary = summarise_server(results, failures)
    print_server_report(results, summary)
    print(f"  failed calls (warm-ups included): {failures}")
    for sample in samples:
        print(f"    e.g. {sample}")

    print()
    print(
        f"2. Client-side token decoding vs raw Ed25519 verify, in-process;"
        f" {args.local_rounds} rounds x {args.local_seconds:g} s per variant, median"
    )
    decoded = local.run(args.local_rounds, args.local_seconds)
    print_local_report(decoded)
    local_failures = sum(r.failures for r in decoded)
    print()
    print("3. Token lifecycle on the embedded default (measured in part 1's server, after it)")
    print_lifecycle_report(lifecycle)
    print(f"  (parts 1 and 3 took {lifecycle_done - part_started:.0f} s)")
    lifecycle_failures = sum(r.failures for r in lifecycle)

    later = run_later_parts(args)

    errors = report_issue(floored, summary, decoded[0], lifecycle, later)
    print_summary(
        summary,
        decoded,
        lifecycle,
        later,
        all_failures=failures + local_failures + lifecycle_failures + errors,
        args=args,
        started=started,
    )
    print(f"Rerun: {rerun_command(args)}")
    return 1 if failures or local_failures or lifecycle_failures or errors else 0


def print_summary(
    summary: ServerSummary,
    decoded: list[local.VariantResult],
    lifecycle: list[LifecycleResult],
    later: LaterParts,
    *,
    all_failures: int,
    args: argparse.Namespace,
    started: float,
) -> None:
    """The one-line summary of the run (older parts' headline numbers)."""
    propagated, scaled = later.propagated, later.scaled
    ratios = {r.name: r.ratio_to_raw for r in decoded}
    names = [r.name for r in decoded]
    print()
    print(
        "Summary: Verify vs echo, calls/s (server CPU/call echo/verify):"
        f" miss {_ratio(summary.throughput['verify-miss'])}"
        f" ({_ratio(summary.cpu['verify-miss'])}), target 0.75x;"
        f" hit {_ratio(summary.throughput['verify-hit'])}"
        f" ({_ratio(summary.cpu['verify-hit'])}), target 0.90x;"
        f"{' client-bound;' if summary.starved else ''}"
        f" decode vs raw Ed25519: ours {_ratio(ratios[names[3]])},"
        f" PyJWT {_ratio(ratios[names[1]])}, PyJWT by kid {_ratio(ratios[names[2]])};"
        f" issue(password) {lifecycle[2].rate:,.0f}/s, issue(client credentials)"
        f" {lifecycle[3].rate:,.0f}/s, refresh {lifecycle[4].rate:,.0f}/s;"
        + (
            f" revocation lag p50 {propagated.quantile(0.5) * 1000:.1f} ms"
            f" p99 {propagated.quantile(0.99) * 1000:.1f} ms over {propagated.revocations};"
            if propagated
            else " propagation skipped;"
        )
        + (
            f" 2 workers {scaled.median(2) / scaled.median(1):.2f}x of 1;"
            if scaled
            else " scaling skipped;"
        )
        + f" failures {all_failures};"
        f" {os.cpu_count()} CPUs, {args.rounds}x{args.duration:g}s,"
        f" {time.monotonic() - started:.0f}s total."
    )


def report_issue(
    floored: floor.FloorResult | None,
    summary: ServerSummary,
    raw: local.VariantResult,
    lifecycle: list[LifecycleResult],
    later: LaterParts,
) -> int:
    """Print the closing table; returns the errors of the parts that gate on them."""
    print()
    print("Issue 13: every ratio next to its target (measured in this run)")
    raw_us = 1e6 / raw.ops_per_second
    print_targets(issue_targets(floored, summary, raw_us, {r.name: r for r in lifecycle}, later))
    return (
        (floored.errors if floored else 0)
        + (later.refreshed.failures if later.refreshed else 0)
        + (later.sustained.errors if later.sustained else 0)
    )


def issue_targets(
    floored: floor.FloorResult | None,
    summary: ServerSummary,
    raw_us: float,
    lifecycle: dict[str, LifecycleResult],
    later: LaterParts,
) -> list[Target]:
    """The rows of the closing table, in the order of issue 13."""
    bare = lifecycle["bare echo (floor process)"].cpu_per_call

    def times_bare(name: str) -> float | None:
        per_call = lifecycle[name].cpu_per_call
        return per_call / bare if per_call is not None and bare else None

    extra = summary.miss_extra_us
    local_raw = later.client_local.raw
    fill = later.sustained.memory if later.sustained else []
    rows = [
        Target(
            "Health/Check vs bare Health/Check, calls/s (h2load)",
            floored.ratio("authority health") if floored else None,
            0.95,
        ),
        Target(
            "Verify, repeated token, vs bare Health/Check (h2load)",
            floored.ratio("verify repeat") if floored else None,
            0.90,
        ),
        Target(
            "ext_authz Check, valid token, vs bare Health/Check (h2load)",
            floored.ratio("ext_authz") if floored else None,
            0.85,
        ),
        Target(
            "cache-miss Verify CPU above bare echo, in raw verifies",
            extra / raw_us if extra is not None else None,
            1.25,
            at_least=False,
            note=f"({_us(extra)} us above bare {_us(summary.bare_us)} us; raw Ed25519"
            f" {raw_us:.0f} us)",
        ),
        Target(
            "client-credentials Issue CPU, x bare echo",
            times_bare("issue: client credentials"),
            2.0,
            at_least=False,
        ),
        Target("Refresh on SQLite CPU, x bare echo", times_bare("refresh"), 2.5, at_least=False),
        Target(
            "Refresh on PostgreSQL vs bare asyncpg transaction, calls/s",
            later.refreshed.ratio if later.refreshed else None,
            0.5,
        ),
        Target(
            "LocalVerifier never-seen token vs raw verify",
            later.client_local.miss / local_raw,
            0.85,
        ),
        Target(
            "LocalVerifier repeated token vs raw verify", later.client_local.hit / local_raw, 10
        ),
        Target(
            "sustained load errors",
            float(later.sustained.errors) if later.sustained else None,
            0,
            at_least=False,
            unit="",
        ),
    ]
    rows += [
        Target(
            f"bytes per cached token, worker {m.pid} ({m.tokens:,} tokens)",
            m.per_token,
            sustained.TARGET_BYTES_PER_TOKEN,
            at_least=False,
            unit="B",
        )
        for m in fill
    ]
    return rows


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the server process was stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
