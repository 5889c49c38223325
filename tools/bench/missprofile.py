"""Where a cache-miss Verify's server CPU goes: stage timers and gc time inside the server.

Runs part 1's server (``tools.bench.server``) pinned like the bench, with timers around
the stages of Verify (the Ed25519 check, JSON, claims typing, the whole verifier, the
response) and ``gc.callbacks`` timing every collection, all by thread CPU time; drives
alternating verify-hit and verify-miss phases and prints each stage's CPU per call. The
timers cost about a microsecond each: compare phases, not against the plain bench.

``python -m tools.bench.missprofile [--rounds 2] [--duration 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authority.api import convert, token_service
from authority.jose import _rfc7515, _rfc7518, _rfc9068
from authority.tokens import verifier
from tools.bench import server
from tools.bench.floor import cpu_plan
from tools.bench.inprocess import ServerInfo, ServerProcess
from tools.bench.load import VERIFY_METHOD, LoadGenerator, Pool, check_valid

STATS_ENV = "AUTHORITY_MISSPROFILE_STATS"
PLAIN_ENV = "AUTHORITY_MISSPROFILE_PLAIN"
Totals = dict[str, list[float]]  # name -> [CPU seconds, calls]


def _instrument(totals: Totals) -> None:
    """Wrap the stages of Verify and hook the collector (in the server process only)."""
    clock = time.thread_time

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        entry = totals.setdefault(name, [0.0, 0])

        def wrapper(*args: Any) -> Any:
            started = clock()
            try:
                return fn(*args)
            finally:
                entry[0] += clock() - started
                entry[1] += 1

        return wrapper

    kind, check = _rfc7518._DIRECT["EdDSA"]
    _rfc7518._DIRECT["EdDSA"] = (kind, timed("ed25519", check))
    _rfc7518._RESOLVED.clear()
    _rfc7515._json_document = timed("json", _rfc7515._json_document)
    # Names these modules import, rebound where the hot path looks them up.
    setattr(_rfc7515, "parse_claims", timed("parse_claims", _rfc9068.parse_claims))  # noqa: B010
    verifier.TokenVerifier.verify = timed("verifier", verifier.TokenVerifier.verify)  # type: ignore[method-assign]
    setattr(token_service, "verify_response", timed("response", convert.verify_response))  # noqa: B010
    started = [0.0]

    def collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = clock()
            return
        entry = totals.setdefault(f"gc{info['generation']}", [0.0, 0])
        entry[0] += clock() - started[0]
        entry[1] += 1

    gc.callbacks.append(collection)


def _publish(totals: Totals, path: Path) -> None:
    while True:
        time.sleep(0.1)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(totals), encoding="utf-8")
        os.replace(partial, path)


def serve(argv: list[str]) -> int:
    """The instrumented server: ``tools.bench.server`` with timers, publishing totals."""
    totals: Totals = {}
    if not os.environ.get(PLAIN_ENV):
        _instrument(totals)
    threading.Thread(
        target=_publish, args=(totals, Path(os.environ[STATS_ENV])), daemon=True
    ).start()
    return server.main(argv)


def _totals(path: Path) -> Totals:
    time.sleep(0.25)  # one publication after the phase
    loaded: Totals = json.loads(path.read_text(encoding="utf-8"))
    return loaded


async def _drive(info: ServerInfo, stats: Path, rounds: int, duration: float) -> None:
    load = LoadGenerator(info.port, info.pid, channels=4, concurrency=48)
    fresh, repeat = Pool(info.fresh, cycle=False), Pool(info.repeat, cycle=True)
    try:
        await load.verify_all(info.repeat)
        await load.run_phase("settle", 0, VERIFY_METHOD, repeat, check_valid, warmup=0, duration=1)
        differences = []
        for round_number in range(1, rounds + 1):
            per_phase = {}
            for phase, pool in (("verify-hit", repeat), ("verify-miss", fresh)):
                before = _totals(stats)
                result = await load.run_phase(
                    phase,
                    round_number,
                    VERIFY_METHOD,
                    pool,
                    check_valid,
                    warmup=0.3,
                    duration=duration,
                )
                after = _totals(stats)
                calls = result.calls + result.failures
                stages = "  ".join(
                    f"{name} {(after[name][0] - before.get(name, [0.0, 0])[0]) / calls * 1e6:.1f}"
                    for name in sorted(after)
                )
                per_call = result.server_us_per_call or 0
                per_phase[phase] = per_call
                print(
                    f"{round_number:>3} {phase:<12} server {per_call:6.0f} us/call"
                    f" (CPU {result.server_utilisation or 0:.0%}); per call, us: {stages}"
                    + (f"  ({result.note})" if result.note else ""),
                    flush=True,
                )
            differences.append(per_phase["verify-miss"] - per_phase["verify-hit"])
    finally:
        await load.close()
    print(
        f"verify-miss minus verify-hit, server us/call: median {statistics.median(differences):.0f}"
        f" of {', '.join(f'{d:.0f}' for d in differences)}"
    )
    if load.failures.count:
        raise RuntimeError(f"{load.failures.count} failed calls, e.g. {load.failures.samples}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.missprofile", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per phase")
    parser.add_argument("--fresh", type=int, default=20_000, help="never-verified tokens")
    parser.add_argument(
        "--plain", action="store_true", help="no timers: server CPU per call only (for A/B)"
    )
    args = parser.parse_args(argv)
    if args.plain:
        os.environ[PLAIN_ENV] = "1"
    server_cpus, load_cpus, how = cpu_plan()
    print(f"{how}; stage CPU per call includes ~1 us per timer")
    with tempfile.TemporaryDirectory(prefix="authority-missprofile-") as workdir:
        stats = Path(workdir) / "stats.json"
        os.environ[STATS_ENV] = str(stats)
        server = ServerProcess(
            Path(workdir), args.fresh, 100, server_cpus, module="tools.bench.missprofile"
        )
        try:
            if load_cpus is not None:
                os.sched_setaffinity(0, {int(load_cpus)})
            info = server.wait_ready()
            asyncio.run(_drive(info, stats, args.rounds, args.duration))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    # The driver starts this module again as the server, telling it where to publish.
    sys.exit(serve(sys.argv[1:]) if os.environ.get(STATS_ENV) else main())
