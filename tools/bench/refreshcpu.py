"""Server CPU per Refresh on PostgreSQL + Redis, the event pipeline included, for A/B
work: ``python -m tools.bench.refreshcpu [--variant NAME=DIR[:nohiredis]]... [--rounds N]``.

Each variant is an ``authority serve`` started from its own source tree (``DIR``: the
server imports ``authority`` from its working directory, so a ``git archive`` of another
commit runs that commit's code with this venv), optionally with hiredis hidden. All
variants run at once, on their own databases, and are measured in turn, round after
round, so they share the machine's noise. A measurement: 16 refresh chains for
``--duration`` seconds, then a pause for the outbox relay and its consumers to finish
those events; the server's CPU time (all threads, from /proc) over both, per refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import uuid
from pathlib import Path

import grpc

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.__main__ import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools.bench.pgrefresh import CONCURRENCY, PASSWORD, admin_sql, production_env
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served

_NO_HIREDIS = Path(tempfile.gettempdir()) / "authority-bench-nohiredis"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _start(directory: str, hide_hiredis: bool, env: dict[str, str], data: Path) -> Served:
    _NO_HIREDIS.mkdir(exist_ok=True)
    (_NO_HIREDIS / "hiredis.py").write_text('raise ImportError("hidden for an A/B run")\n')
    saved_cwd, saved_path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(directory)
    if hide_hiredis:
        os.environ["PYTHONPATH"] = str(_NO_HIREDIS)
    else:
        os.environ.pop("PYTHONPATH", None)
    try:
        return Served(data, env)
    finally:
        os.chdir(saved_cwd)
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path


async def _chains(served: Served) -> tuple[grpc.aio.Channel, list[str]]:
    channel = grpc.aio.insecure_channel(served.target)
    tokens = token_pb2_grpc.TokenServiceStub(channel)
    await admin_pb2_grpc.AdminServiceStub(channel).CreatePrincipal(
        admin_pb2.CreatePrincipalRequest(name="bench", password=PASSWORD),
        metadata=(("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),),
    )
    login = token_pb2.IssueRequest(
        password=token_pb2.PasswordGrant(principal="bench", password=PASSWORD)
    )
    return channel, [(await tokens.Issue(login)).tokens.refresh_token for _ in range(CONCURRENCY)]


async def _measure(
    served: Served, channel: grpc.aio.Channel, chains: list[str], seconds: float, settle: float
) -> float:
    tokens = token_pb2_grpc.TokenServiceStub(channel)
    stop = asyncio.Event()
    done = [0]

    async def loop(index: int) -> None:
        while not stop.is_set():
            answer = await tokens.Refresh(token_pb2.RefreshRequest(refresh_token=chains[index]))
            chains[index] = answer.tokens.refresh_token
            done[0] += 1

    before = sum(_cpu(pid) for pid in served.pids)
    tasks = [asyncio.create_task(loop(i)) for i in range(CONCURRENCY)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(settle)
    return (sum(_cpu(pid) for pid in served.pids) - before) / done[0]


async def _run(
    variants: dict[str, Served], rounds: int, seconds: float, settle: float
) -> dict[str, list[float]]:
    ready = {name: await _chains(served) for name, served in variants.items()}
    for name, served in variants.items():  # warm up
        await _measure(served, *ready[name], seconds / 2, settle)
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, served in variants.items():
            results[name].append(await _measure(served, *ready[name], seconds, settle))
    for channel, _ in ready.values():
        await channel.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.refreshcpu", description=__doc__)
    parser.add_argument("--variant", action="append", default=[], help="NAME=DIR[:nohiredis]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=1.5)
    args = parser.parse_args()
    specs = args.variant or [f"this tree={os.getcwd()}"]
    variants: dict[str, Served] = {}
    databases: list[str] = []
    with tempfile.TemporaryDirectory(prefix="authority-bench-refreshcpu-") as workdir:
        try:
            for spec in specs:
                name, _, where = spec.partition("=")
                directory, _, flag = where.partition(":")
                database = f"bench_{uuid.uuid4().hex}"
                asyncio.run(admin_sql(DEFAULT_DATABASE_URL, f'CREATE DATABASE "{database}"'))
                databases.append(database)
                env = production_env(DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, database)
                data = Path(workdir) / database
                variants[name] = _start(directory, flag == "nohiredis", env, data)
            for served in variants.values():
                served.wait_ready()
            results = asyncio.run(_run(variants, args.rounds, args.duration, args.settle))
        finally:
            for served in variants.values():
                served.stop()
            for database in databases:
                statement = f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
                asyncio.run(admin_sql(DEFAULT_DATABASE_URL, statement))
    print("server CPU per Refresh (PostgreSQL + Redis, event pipeline included), µs")
    for name, values in results.items():
        shown = ", ".join(f"{v * 1e6:.0f}" for v in values)
        print(f"  {name:<28} {statistics.median(values) * 1e6:7.0f}  ({shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
