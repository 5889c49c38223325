"""Part 3 of ``make bench``: what the token lifecycle costs on the embedded default.

Issue (password grant: one argon2id verification in the hashing pool, a session row
and a refresh row written to SQLite), Issue (client credentials: a SHA-256 compare
and a signature, nothing written) and Refresh (a conditional UPDATE and an INSERT in
one SQLite transaction, a sealed successor, a signature) are each timed for a few
seconds next to the same bare echo RPC as part 1, with the server's CPU per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.cpu import process_cpu_seconds
from tools.bench.server import ADMIN_TOKEN, ECHO_METHOD

PRINCIPAL = "bench-user"
PASSWORD = "bench passphrase that is long enough"
CLIENT_ID = "bench-service"


@dataclass(frozen=True)
class LifecycleResult:
    name: str
    calls: int
    failures: int
    seconds: float
    server_cpu: float | None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_call(self) -> float | None:
        if self.server_cpu is None or not self.calls:
            return None
        return self.server_cpu / self.calls


Worker = Callable[[], Awaitable[None]]


async def _timed(
    name: str,
    pid: int,
    workers: Sequence[Worker],
    duration: float,
    background: Sequence[Worker] = (),
) -> LifecycleResult:
    """Run ``workers`` (counted) and ``background`` (load only, not counted) together."""
    stop = asyncio.Event()
    counts = {"ok": 0, "failed": 0}

    async def loop(work: Worker, counted: bool) -> None:
        while not stop.is_set():
            try:
                await work()
                if counted:
                    counts["ok"] += 1
            except grpc.aio.AioRpcError:
                if counted:
                    counts["failed"] += 1

    cpu_before = process_cpu_seconds(pid)
    started = time.perf_counter()
    tasks = [asyncio.create_task(loop(work, True)) for work in workers]
    tasks += [asyncio.create_task(loop(work, False)) for work in background]
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    cpu_after = process_cpu_seconds(pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return LifecycleResult(name, counts["ok"], counts["failed"], elapsed, cpu)


async def measure_lifecycle(
    port: int, pid: int, *, duration: float, concurrency: int, bare: tuple[int, int]
) -> list[LifecycleResult]:
    """The rows of part 3; the first is the bare server's echo (``bare``: its port and
    pid), the second the in-process echo, both as the ratios' denominators."""
    bare_port, bare_pid = bare
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}") as bare_channel,
    ):
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        await admin.CreatePrincipal(
            admin_pb2.CreatePrincipalRequest(name=PRINCIPAL, password=PASSWORD), metadata=metadata
        )
        created = await admin.CreateClient(
            admin_pb2.CreateClientRequest(
                client=admin_pb2.Client(
                    id=CLIENT_ID,
                    confidential=True,
                    grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                    audiences=["default"],
                )
            ),
            metadata=metadata,
        )
        echo = channel.unary_unary(
            ECHO_METHOD,
            request_serializer=token_pb2.VerifyRequest.SerializeToString,
            response_deserializer=token_pb2.VerifyResponse.FromString,
        )
        bare_echo = bare_channel.unary_unary(
            ECHO_METHOD,
            request_serializer=token_pb2.VerifyRequest.SerializeToString,
            response_deserializer=token_pb2.VerifyResponse.FromString,
        )
        echo_request = token_pb2.VerifyRequest(token="x" * 400)

        async def call_bare_echo() -> None:
            await bare_echo(echo_request)

        password_request = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal=PRINCIPAL, password=PASSWORD)
        )
        credentials_request = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id=CLIENT_ID, client_secret=created.client_secret
            )
        )

        async def call_echo() -> None:
            await echo(echo_request)

        async def issue_password() -> None:
            await tokens.Issue(password_request)

        async def issue_credentials() -> None:
            await tokens.Issue(credentials_request)

        async def session_worker() -> Worker:
            """A worker holding its own session, refreshing its newest token each time."""
            current = (await tokens.Issue(password_request)).tokens.refresh_token

            async def refresh() -> None:
                nonlocal current
                answer = await tokens.Refresh(token_pb2.RefreshRequest(refresh_token=current))
                current = answer.tokens.refresh_token

            return refresh

        refreshers = [await session_worker() for _ in range(concurrency)]
        access_token = (await tokens.Issue(password_request)).tokens.access_token
        verify_request = token_pb2.VerifyRequest(token=access_token)

        async def verify() -> None:
            answer = await tokens.Verify(verify_request)
            if answer.result != token_pb2.VERIFY_RESULT_VALID:
                raise RuntimeError("the bench token did not verify")

        plan: list[tuple[str, Sequence[Worker]]] = [
            ("echo", [call_echo] * concurrency),
            ("issue: password", [issue_password] * concurrency),
            ("issue: client credentials", [issue_credentials] * concurrency),
            ("refresh", refreshers),
        ]
        results = []
        bare_plan: list[tuple[str, Sequence[Worker]]] = [
            ("bare echo (floor process)", [call_bare_echo] * concurrency)
        ]
        for name, workers in bare_plan:
            await _timed(name, bare_pid, workers, min(0.5, duration))  # warm-up, not reported
            results.append(await _timed(name, bare_pid, workers, duration))
        for name, workers in plan:
            await _timed(name, pid, workers, min(0.5, duration))  # warm-up, not reported
            results.append(await _timed(name, pid, workers, duration))
        # Logins hash in a bounded pool off the event loop: Verify should barely notice.
        verifiers = [verify] * concurrency
        results.append(await _timed("verify (repeat token)", pid, verifiers, duration))
        results.append(
            await _timed(
                "verify during a login flood",
                pid,
                verifiers,
                duration,
                background=[issue_password] * concurrency,
            )
        )
        return results


def print_lifecycle_report(results: list[LifecycleResult]) -> None:
    """The table; the last two rows compare Verify alone and during a login flood."""
    bare, echo = results[0].cpu_per_call, results[1].cpu_per_call
    header = ("operation", "calls/s", "server us/call", "x echo CPU", "x bare CPU", "failures")
    print("  {:<26} {:>9} {:>15} {:>11} {:>11} {:>9}".format(*header))
    for result in results:
        per_call = result.cpu_per_call
        us = f"{per_call * 1e6:,.0f}" if per_call is not None else "n/a"
        times = [
            f"{per_call / base:.1f}x" if per_call is not None and base else "n/a"
            for base in (echo, bare)
        ]
        print(
            f"  {result.name:<26} {result.rate:>9,.0f} {us:>15} {times[0]:>11} {times[1]:>11}"
            f" {result.failures:>9}"
        )
    alone, flooded = results[-2], results[-1]
    if alone.rate:
        print(
            f"  Verify throughput during the login flood: {flooded.rate / alone.rate:.2f}x of"
            " Verify alone (its CPU per call there includes the hashing threads)"
        )
