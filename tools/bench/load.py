"""The gRPC load generator: time-boxed phases of concurrent calls, every response checked.

Requests are serialised before the clock starts, so the generator spends its CPU on
gRPC rather than on building messages. A phase runs a warm-up, then a measured window
bounded by two snapshots (calls, failures, server CPU, own CPU), so ramp-up and drain
never count.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc

from authority.v1 import token_pb2
from tools.bench.cpu import own_cpu_seconds, process_cpu_seconds

VERIFY_METHOD = "/authority.v1.TokenService/Verify"
CALL_TIMEOUT = 10.0
# Past this many failures in one phase the numbers mean nothing: stop the phase at once.
FAILURE_LIMIT = 200
MAX_SAMPLES = 5

Check = Callable[[token_pb2.VerifyResponse, str], str | None]
Call: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, token_pb2.VerifyResponse]"


def check_echo(response: token_pb2.VerifyResponse, token: str) -> str | None:
    """None when the echo returned the token, else what went wrong."""
    return None if response.detail == token else "echo returned another token"


def check_valid(response: token_pb2.VerifyResponse, token: str) -> str | None:
    """None when Verify said VALID, else the verdict (a bench must not time rejections)."""
    if response.result == token_pb2.VERIFY_RESULT_VALID:
        return None
    verdict = token_pb2.VerifyResult.Name(response.result)
    return f"Verify answered {verdict}: {response.detail}"


class Pool:
    """Pre-serialised requests. ``cycle=False`` hands each out once: the cache-miss pool."""

    def __init__(self, tokens: Sequence[str], *, cycle: bool) -> None:
        self.tokens = list(tokens)
        self.requests = [token_pb2.VerifyRequest(token=t).SerializeToString() for t in tokens]
        self.cycle = cycle
        self.used = 0

    def take(self) -> int | None:
        """The index of the next request, or None when a one-shot pool is used up."""
        index = self.used
        if index >= len(self.requests):
            if not self.cycle or not self.requests:
                return None
            index = index % len(self.requests)
        self.used += 1
        return index


@dataclass
class Failures:
    """Every failed call of the run, with a few examples to print."""

    count: int = 0
    samples: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.count += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(what)


@dataclass
class _Counters:
    ok: int = 0
    failed: int = 0


@dataclass
class _Phase:
    """What the workers of one phase share."""

    pool: Pool
    check: Check
    counters: _Counters = field(default_factory=_Counters)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    exhausted: bool = False


@dataclass(frozen=True)
class _Snapshot:
    wall: float
    ok: int
    failed: int
    server_cpu: float | None
    client_cpu: float

    @classmethod
    def take(cls, counters: _Counters, server_pid: int) -> _Snapshot:
        return cls(
            time.perf_counter(),
            counters.ok,
            counters.failed,
            process_cpu_seconds(server_pid),
            own_cpu_seconds(),
        )


@dataclass(frozen=True)
class PhaseResult:
    """One measured window of one phase."""

    phase: str
    round: int
    calls: int
    failures: int
    seconds: float
    server_cpu: float | None
    client_cpu: float
    note: str = ""

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_us_per_call(self) -> float | None:
        if self.server_cpu is None or self.calls == 0:
            return None
        return self.server_cpu / self.calls * 1e6

    @property
    def server_utilisation(self) -> float | None:
        """Server CPU as a fraction of one core (may exceed 1: gRPC has C-core threads)."""
        if self.server_cpu is None or self.seconds <= 0:
            return None
        return self.server_cpu / self.seconds

    @property
    def client_utilisation(self) -> float:
        return self.client_cpu / self.seconds if self.seconds > 0 else 0.0


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class LoadGenerator:
    """Several channels to one server; ``run_phase`` keeps ``concurrency`` calls in flight."""

    def __init__(self, port: int, server_pid: int, *, channels: int, concurrency: int) -> None:
        self._server_pid = server_pid
        self._concurrency = concurrency
        # A local subchannel pool per channel: otherwise gRPC shares one TCP connection.
        self._channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(channels)
        ]
        self.failures = Failures()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def _calls(self, method: str) -> list[Call]:
        # No request serialiser: the pools hold bytes already.
        return [
            channel.unary_unary(
                method,
                request_serializer=None,
                response_deserializer=token_pb2.VerifyResponse.FromString,
            )
            for channel in self._channels
        ]

    async def verify_all(self, tokens: Sequence[str]) -> None:
        """Verify each token once (to fill the cache), counting anything not VALID."""
        pool = Pool(tokens, cycle=False)
        call = self._calls(VERIFY_METHOD)[0]
        for index, request in enumerate(pool.requests):
            await self._one(call, request, pool.tokens[index], check_valid, _Counters())

    async def _one(
        self, call: Call, request: bytes, token: str, check: Check, counters: _Counters
    ) -> None:
        try:
            response = await call(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            problem: str | None = f"RPC failed: {exc.code().name}: {exc.details()}"
        else:
            problem = check(response, token)
        if problem is None:
            counters.ok += 1
        else:
            counters.failed += 1
            self.failures.add(problem)

    async def _worker(self, call: Call, phase: _Phase) -> None:
        pool, counters = phase.pool, phase.counters
        while not phase.stop.is_set():
            index = pool.take()
            if index is None:
                phase.exhausted = True
                phase.stop.set()
                return
            await self._one(call, pool.requests[index], pool.tokens[index], phase.check, counters)
            if counters.failed >= FAILURE_LIMIT:
                phase.stop.set()

    async def run_phase(
        self,
        phase: str,
        round_number: int,
        method: str,
        pool: Pool,
        check: Check,
        *,
        warmup: float,
        duration: float,
    ) -> PhaseResult:
        """Warm up, then measure ``duration`` seconds between two snapshots."""
        state = _Phase(pool, check)
        counters, stop = state.counters, state.stop
        calls = self._calls(method)
        workers = [
            asyncio.create_task(self._worker(calls[i % len(calls)], state))
            for i in range(self._concurrency)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), warmup)
            start = _Snapshot.take(counters, self._server_pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            end = _Snapshot.take(counters, self._server_pid)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        note = ""
        if state.exhausted:
            note = "token pool ran out: window cut short (raise --fresh)"
        elif counters.failed >= FAILURE_LIMIT:
            note = f"stopped after {counters.failed} failures"
        server_cpu = (
            None
            if start.server_cpu is None or end.server_cpu is None
            else end.server_cpu - start.server_cpu
        )
        return PhaseResult(
            phase=phase,
            round=round_number,
            calls=end.ok - start.ok,
            failures=end.failed - start.failed,
            seconds=end.wall - start.wall,
            server_cpu=server_cpu,
            client_cpu=end.client_cpu - start.client_cpu,
            note=note,
        )
