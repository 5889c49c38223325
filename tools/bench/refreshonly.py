"""Only the Refresh rows of ``make bench`` (part 3's echo and refresh, part 7), for
working on Refresh: ``python -m tools.bench.refreshonly [--duration S] [--rounds N]``.

The ratios are the same ones ``make bench`` prints, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from tools.bench import floor, pgrefresh
from tools.bench.__main__ import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, LIFECYCLE_CONCURRENCY
from tools.bench.bare import BareServer
from tools.bench.inprocess import ServerProcess
from tools.bench.lifecycle import measure_lifecycle, print_lifecycle_report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.refreshonly", description=__doc__)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    failures = 0
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="authority-bench-") as workdir:
            server_cpus, load_cpus, how = floor.cpu_plan()
            print(f"3. lifecycle on SQLite; {how}")
            server = ServerProcess(Path(workdir), 1, 1, server_cpus)
            bare = BareServer(server_cpus)
            own = os.sched_getaffinity(0)
            try:
                if load_cpus is not None:
                    os.sched_setaffinity(0, {int(load_cpus)})
                info = server.wait_ready()
                results = asyncio.run(
                    measure_lifecycle(
                        info.port,
                        info.pid,
                        duration=args.duration,
                        concurrency=LIFECYCLE_CONCURRENCY,
                        bare=(bare.port, bare.pid),
                    )
                )
            finally:
                os.sched_setaffinity(0, own)
                server.stop()
                bare.stop()
        print_lifecycle_report(results)
        failures += sum(r.failures for r in results)
    if not args.skip_postgres:
        print("7. Refresh on PostgreSQL vs the same statements sent by bare asyncpg")
        refreshed = pgrefresh.run(
            DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, args.rounds, args.duration
        )
        pgrefresh.print_refresh_report(refreshed)
        failures += refreshed.failures
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
