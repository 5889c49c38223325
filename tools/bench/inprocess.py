"""Part 1 of ``make bench``: the in-process server phases (echo, Verify miss and hit)
and their report; part 2's report of local decoding."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.bench import local
from tools.bench.bare import BareServer
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
from tools.bench.rawverify import raw_verify_cpu_us
from tools.bench.server import ECHO_METHOD

PHASES = ("bare-echo", "echo", "verify-miss", "verify-hit")
TARGETS = {"verify-miss": 0.75, "verify-hit": 0.90}
# Below this share of one core the server was waiting for the load generator.
SATURATED = 0.85
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    fresh: list[str]
    repeat: list[str]
    mint_seconds: float
    cache_size: int
    event_loop: str = "asyncio"


class ServerProcess:
    """The server subprocess; ``stop`` always ends it (SIGTERM, then SIGKILL after a timeout)."""

    def __init__(
        self,
        workdir: Path,
        fresh: int,
        repeat: int,
        cpus: str | None = None,
        module: str = "tools.bench.server",
    ) -> None:
        self._ready = workdir / "ready.json"
        self._log_path = workdir / "server.log"
        data_dir = workdir / "data"
        data_dir.mkdir()
        command = [
            sys.executable,
            "-m",
            module,
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
            event_loop=str(document.get("event_loop", "asyncio")),
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
    info: ServerInfo,
    args: argparse.Namespace,
    server: ServerProcess,
    bare: BareServer,
    server_cpus: str | None,
) -> tuple[list[PhaseResult], dict[int, float], int, list[str]]:
    """Rounds of bare-echo (the floor process), echo, verify-miss, verify-hit, then the raw
    Ed25519 verify on the server's core; returns results, raw CPU us by round, failures."""
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
    raw_us: dict[int, float] = {}
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
            # The servers idle now: the reference takes their core, timed by CPU as they are.
            raw_us[round_number] = raw_verify_cpu_us(server_cpus, args.duration / 2)
            print(
                f"  {round_number:>5}  {'raw verify':<12} {'':>9} {raw_us[round_number]:>12.0f}"
                "  (Ed25519, CPU time on the server's core)",
                flush=True,
            )
    finally:
        await load.close()
        await floor.close()
    print(f"  verify-miss used {fresh.used:,} of {len(info.fresh):,} fresh tokens, each once")
    failures = load.failures.count + floor.failures.count
    return results, raw_us, failures, load.failures.samples + floor.failures.samples


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _round_row(r: PhaseResult) -> str:
    row = (
        f"  {r.round:>5}  {r.phase:<12} {r.calls_per_second:>9,.0f}"
        f" {fmt_us(r.server_us_per_call):>12}"
        f" {fmt_pct(r.server_utilisation):>11} {fmt_pct(r.client_utilisation):>11} {r.failures:>9}"
    )
    return row + (f"  ({r.note})" if r.note else "")


def fmt_ratio(value: float | None) -> str:
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
    raw_us: float | None = None  # median raw Ed25519 verify CPU on the server's core
    miss_in_raw: float | None = None  # median per round: miss_extra_us / that round's raw_us


def summarise_server(
    results: list[PhaseResult], failures: int, raw_us: dict[int, float] | None = None
) -> ServerSummary:
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
    in_raw: list[float | None] = []
    raw_us = raw_us or {}
    for round_number, phases in by_round.items():
        miss, bare = (
            phases["verify-miss"].server_us_per_call,
            phases["bare-echo"].server_us_per_call,
        )
        above = miss - bare if miss is not None and bare is not None else None
        extra.append(above)
        raw = raw_us.get(round_number)
        in_raw.append(above / raw if above is not None and raw else None)
    bare_us = median_or_none([p["bare-echo"].server_us_per_call for p in by_round.values()])
    starved = [
        f"{r.phase} (round {r.round}, {fmt_pct(r.server_utilisation)})"
        for r in results
        if r.server_utilisation is not None and r.server_utilisation < SATURATED
    ]
    return ServerSummary(
        throughput,
        cpu,
        starved,
        failures,
        median_or_none(extra),
        bare_us,
        median_or_none(list(raw_us.values())),
        median_or_none(in_raw),
    )


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
            f" {fmt_us(median_or_none([r.server_us_per_call for r in rows])):>15}"
            f" {fmt_pct(median_or_none([r.server_utilisation for r in rows])):>11}"
            f" {fmt_pct(median_or_none([r.client_utilisation for r in rows])):>11}"
            f" {fmt_us(median_or_none(client_us)):>15}"
        )
    print()
    print(
        f"  {'ratio (median of rounds)':<26} {'calls/s':>8} {'':<6}"
        f" {'echo/verify server CPU per call':>32} {'':<6} target"
    )
    for phase, target in TARGETS.items():
        t, c = summary.throughput[phase], summary.cpu[phase]
        print(
            f"  {phase + ' / echo':<26} {fmt_ratio(t):>8} {_verdict(t, target):<6}"
            f" {fmt_ratio(c):>32} {_verdict(c, target):<6} >= {target:.2f}x"
        )
    if summary.raw_us is not None:
        print(
            f"  verify-miss above bare-echo: {fmt_us(summary.miss_extra_us)} us per call ="
            f" {fmt_ratio(summary.miss_in_raw)} raw cryptography (OpenSSL) Ed25519 verifies"
            f" ({summary.raw_us:.0f} us CPU on the server's core; target <= 1.25x)"
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
            f" {fmt_ratio(r.ratio_to_raw):>7}{failed}"
        )


# -- the run --------------------------------------------------------------------------------
