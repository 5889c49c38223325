"""A narrow bench: client-credentials Issue next to the bare and in-process echo only.

For iterating on the Issue path (issue 13, item 4) without the whole of ``make bench``;
the same server, pinning and workers as part 3, interleaved rounds, ratios per round.
``--hold SECONDS`` keeps issuing that long first (e.g. under ``py-spy record``);
``--fresh N`` fills the verify cache with N tokens first, as part 1 of the bench does.

Run: ``.venv/bin/python -m tools.bench.issue [--rounds 3] [--duration 2] [--hold 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench import floor
from tools.bench.bare import BareServer
from tools.bench.inprocess import ServerProcess
from tools.bench.lifecycle import CLIENT_ID, LifecycleResult, Worker, _timed
from tools.bench.server import ADMIN_TOKEN, ECHO_METHOD

CONCURRENCY = 16


def _echo(channel: grpc.aio.Channel) -> Worker:
    call = channel.unary_unary(
        ECHO_METHOD,
        request_serializer=token_pb2.VerifyRequest.SerializeToString,
        response_deserializer=token_pb2.VerifyResponse.FromString,
    )
    request = token_pb2.VerifyRequest(token="x" * 400)

    async def echo() -> None:
        await call(request)

    return echo


async def _issuer(channel: grpc.aio.Channel) -> Worker:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    created = await admin.CreateClient(
        admin_pb2.CreateClientRequest(
            client=admin_pb2.Client(
                id=CLIENT_ID,
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
            )
        ),
        metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
    )
    tokens = token_pb2_grpc.TokenServiceStub(channel)
    request = token_pb2.IssueRequest(
        client_credentials=token_pb2.ClientCredentialsGrant(
            client_id=CLIENT_ID, client_secret=created.client_secret
        )
    )

    async def issue() -> None:
        await tokens.Issue(request)

    return issue


async def measure(
    port: int,
    pid: int,
    bare: tuple[int, int],
    *,
    rounds: int,
    duration: float,
    hold: float,
    fresh: list[str],
) -> list[list[LifecycleResult]]:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{bare[0]}") as bare_channel,
    ):
        issue = await _issuer(channel)
        verify = token_pb2_grpc.TokenServiceStub(channel).Verify
        for start in range(0, len(fresh), 200):
            await asyncio.gather(
                *(verify(token_pb2.VerifyRequest(token=t)) for t in fresh[start : start + 200])
            )
        plan: list[tuple[str, int, Worker]] = [
            ("bare echo", bare[1], _echo(bare_channel)),
            ("echo", pid, _echo(channel)),
            ("issue: client credentials", pid, issue),
        ]
        for name, target, work in plan:
            await _timed(name, target, [work] * CONCURRENCY, 0.5)
        if hold:
            print(f"holding: issuing for {hold:g} s against pid {pid}", flush=True)
            await _timed("hold", pid, [issue] * CONCURRENCY, hold)
        return [
            [
                await _timed(name, target, [work] * CONCURRENCY, duration)
                for name, target, work in plan
            ]
            for _ in range(rounds)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.issue", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--fresh", type=int, default=1)
    args = parser.parse_args(argv)
    server_cpus, load_cpus, how = floor.cpu_plan()
    print(how)
    with tempfile.TemporaryDirectory(prefix="authority-bench-issue-") as workdir:
        server = ServerProcess(Path(workdir), args.fresh, 1, server_cpus)
        bare = BareServer(server_cpus)
        own = os.sched_getaffinity(0)
        try:
            if load_cpus is not None:
                os.sched_setaffinity(0, {int(load_cpus)})
            info = server.wait_ready()
            rounds = asyncio.run(
                measure(
                    info.port,
                    info.pid,
                    (bare.port, bare.pid),
                    rounds=args.rounds,
                    duration=args.duration,
                    hold=args.hold,
                    fresh=info.fresh if args.fresh > 1 else [],
                )
            )
        finally:
            os.sched_setaffinity(0, own)
            server.stop()
            bare.stop()
    failures = 0
    for number, results in enumerate(rounds, 1):
        base, echo, issue = (r.cpu_per_call for r in results)
        failures += sum(r.failures for r in results)
        if base is None or echo is None or issue is None:
            print(f"round {number}: no CPU figures")
            continue
        print(
            f"round {number}: bare {base * 1e6:,.0f} us, echo {echo * 1e6:,.0f} us,"
            f" issue {issue * 1e6:,.0f} us ({results[2].rate:,.0f}/s):"
            f" {issue / base:.2f}x bare, {issue / echo:.2f}x echo"
        )
    print(f"failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
