"""``make bench``: what Verify costs next to a bare RPC, and what decoding costs next to Ed25519.

Only ratios measured side by side in one run are reported: the machine is shared and
noisy, so absolute numbers move between runs while ratios mostly do not.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from tools.bench import client, floor, local, pgrefresh, propagation, scaling, sustained
from tools.bench.bare import BareServer
from tools.bench.h2 import h2load
from tools.bench.inprocess import (
    ServerProcess,
    measure_server,
    print_local_report,
    print_server_report,
    summarise_server,
)
from tools.bench.lifecycle import measure_lifecycle, print_lifecycle_report
from tools.bench.report import LaterParts, print_summary, report_issue

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# An upper bound on cache-miss Verify calls/s here, to size the never-verified pool.
MISS_RATE_BOUND = 6000
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
        # Not fewer: the RSS growth of 1,024 tokens (~1 MiB) is within the allocator's
        # own noise (2,400-4,100 bytes per token measured, against ~1,200 at 65,536).
        "fill": 8192,
    },
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument(
        "--floor-only", action="store_true", help="run part 0 (the floor) only, then stop"
    )
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
        "--fill", type=int, help="never-seen tokens per worker's verify cache (65536, quick 8192)"
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


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (e.g. make being stopped) unwinds like Ctrl-C, so the server is still ended."""
    raise KeyboardInterrupt


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
    print(
        "5. Client library: local verification vs raw Ed25519 (cryptography's, the issue's"
        " reference), and the watch stream"
    )
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
        f"7. Refresh on PostgreSQL vs the same statements sent by bare asyncpg;"
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
    if args.floor_only:
        return 0
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
                f"  server pid {info.pid}, port {info.port}, on {info.event_loop};"
                f" minted {len(info.fresh):,} fresh +"
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
            results, raw_us, failures, samples = asyncio.run(
                measure_server(info, args, server, bare, server_cpus)
            )
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
    summary = summarise_server(results, failures, raw_us)
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the server process was stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
