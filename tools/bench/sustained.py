"""Part 8 of ``make bench``: latency under sustained mixed load, and memory per cached token.

``authority serve --workers 2`` on PostgreSQL + Redis (a fresh database). A short
closed-loop probe (64 calls in flight) measures the maximum rate of the mix; then an
open-loop generator sends the same mix at 80% of it: 90% Verify (72% a repeated token,
18% a never-verified one), 5% Refresh, 4% client-credentials Issue, 1% Revoke (of
tokens the Issue calls minted). Each call's latency runs from when it was due, not when
the generator got to it, so a late generator cannot hide a slow server. Any failed call
or unexpected verdict is an error, and errors fail the bench.

Then each worker's verify cache is filled with never-seen tokens over a connection that
/proc shows is that worker's, and its RSS is compared with the RSS before the load:
bytes per cached token, an upper bound (everything else that grew counts too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from authority_client.channels import CHANNEL_OPTIONS

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.pgrefresh import admin_sql, production_env
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served
from tools.bench.stats import percentile, weighted_plan

MIX = (("verify repeat", 72), ("verify fresh", 18), ("refresh", 5), ("issue", 4), ("revoke", 1))
LOAD_SHARE = 0.8
PROBE_CONCURRENCY = 64
CHANNELS = 8
CHAINS = 32
REPEAT = 100
REVOCABLE = 100  # seeds Revoke; the Issue calls of the mix (4x as many) feed it
MAX_IN_FLIGHT = 4096
CACHE_SIZE = 65_536  # AUTHORITY_VERIFY_CACHE_SIZE's default
TARGET_BYTES_PER_TOKEN = 2048
PASSWORD = "bench passphrase that is long enough"
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass(frozen=True)
class Memory:
    pid: int
    before: int  # RSS bytes before the load
    after: int  # RSS bytes with a full verify cache
    tokens: int  # never-seen tokens verified on this worker for the fill

    @property
    def per_token(self) -> float:
        return (self.after - self.before) / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class SustainedResult:
    maximum: float  # calls/s of the mix, closed loop
    offered: float  # calls/s asked for
    achieved: float  # calls/s sent
    seconds: float
    ops: dict[str, OpStats]
    late_p99: float  # seconds the generator sent behind schedule, p99
    late_max: float
    memory: list[Memory]
    samples: list[str]
    fresh_exhausted: bool
    probe_errors: int

    @property
    def errors(self) -> int:
        return self.probe_errors + sum(s.errors for s in self.ops.values())


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _tcp_table() -> list[tuple[int, int, int]]:
    """(local port, remote port, socket inode) of every established IPv4/IPv6 TCP socket."""
    entries = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name, encoding="ascii") as table:
            for line in list(table)[1:]:
                fields = line.split()
                if fields[3] == "01":  # ESTABLISHED
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    entries.append((local, remote, int(fields[9])))
    return entries


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _client_ports(server_port: int) -> set[int]:
    return {local for local, remote, _ in _tcp_table() if remote == server_port}


def _owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The worker whose socket is the server end of the connection from ``client_port``."""
    inodes = {
        inode
        for local, remote, inode in _tcp_table()
        if (local, remote) == (server_port, client_port)
    }
    for pid in pids:
        if inodes & _socket_inodes(pid):
            return pid
    return None


async def _channel_per_worker(served: Served) -> dict[int, grpc.aio.Channel]:
    """One channel on each worker's connection, found through /proc (as many as found)."""
    found: dict[int, grpc.aio.Channel] = {}
    spare: list[grpc.aio.Channel] = []
    for _ in range(16):
        if len(found) == len(served.pids):
            break
        before = _client_ports(served.grpc_port)
        channel = grpc.aio.insecure_channel(
            served.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        await channel.channel_ready()
        new = _client_ports(served.grpc_port) - before
        owner = _owner(served.grpc_port, new.pop(), served.pids) if len(new) == 1 else None
        if owner is not None and owner not in found:
            found[owner] = channel
        else:
            spare.append(channel)
    for channel in spare:
        await channel.close()
    return found


class _Traffic:
    """The calls of the mix over a few channels, each checked; every failure counted."""

    def __init__(
        self,
        channels: list[grpc.aio.Channel],
        *,
        secret: str,
        repeat: list[str],
        fresh: list[str],
        chains: list[str],
        revocable: list[str],
    ) -> None:
        self._stubs = [token_pb2_grpc.TokenServiceStub(c) for c in channels]
        self._turn = 0
        self.ops = {name: OpStats() for name, _ in MIX}
        self.samples: list[str] = []
        self._issue = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id="bench-sustained", client_secret=secret
            )
        )
        self._repeat = [token_pb2.VerifyRequest(token=t) for t in repeat]
        self._fresh = deque(token_pb2.VerifyRequest(token=t) for t in fresh)
        self.fresh_exhausted = False
        self._chains: asyncio.Queue[str] = asyncio.Queue()
        for chain in chains:
            self._chains.put_nowait(chain)
        self._revocable = deque(revocable)

    def reset(self) -> tuple[int, list[str]]:
        """Start counting afresh; returns the errors and samples so far."""
        errors, samples = sum(s.errors for s in self.ops.values()), self.samples
        self.ops = {name: OpStats() for name, _ in MIX}
        self.samples = []
        return errors, samples

    def _stub(self) -> token_pb2_grpc.TokenServiceAsyncStub:
        self._turn += 1
        return self._stubs[self._turn % len(self._stubs)]

    async def _verify(self, request: token_pb2.VerifyRequest) -> str | None:
        answer = await self._stub().Verify(request)
        if answer.result != token_pb2.VERIFY_RESULT_VALID:
            return f"Verify answered {token_pb2.VerifyResult.Name(answer.result)}"
        return None

    async def _call(self, name: str) -> str | None:
        if name == "verify repeat":
            return await self._verify(self._repeat[self._turn % len(self._repeat)])
        if name == "verify fresh":
            if not self._fresh:
                self.fresh_exhausted = True
                return await self._verify(self._repeat[0])
            return await self._verify(self._fresh.popleft())
        if name == "refresh":
            chain = await self._chains.get()
            try:
                answer = await self._stub().Refresh(token_pb2.RefreshRequest(refresh_token=chain))
                chain = answer.tokens.refresh_token
            finally:
                self._chains.put_nowait(chain)  # a failed refresh leaves the chain as it was
            return None
        if name == "issue":
            issued = await self._stub().Issue(self._issue)
            self._revocable.append(issued.tokens.access_token)
            return None
        token = self._revocable.popleft()
        await self._stub().Revoke(token_pb2.RevokeRequest(access_token=token))
        return None

    async def timed(self, name: str, due: float) -> None:
        """One call; its latency counts from ``due`` (perf_counter)."""
        try:
            problem = await self._call(name)
        except grpc.aio.AioRpcError as exc:
            problem = f"{name}: {exc.code().name}: {exc.details()}"
        except IndexError:
            problem = f"{name}: nothing left to revoke"
        stats = self.ops[name]
        stats.latencies.append(time.perf_counter() - due)
        if problem is not None:
            stats.errors += 1
            if len(self.samples) < 5:
                self.samples.append(problem)


async def _probe(traffic: _Traffic, seconds: float) -> float:
    """Closed loop, ``PROBE_CONCURRENCY`` in flight: calls/s of the mix."""
    plan = weighted_plan(MIX, 10_000)
    stop, done, turn = asyncio.Event(), [0], [0]

    async def loop() -> None:
        while not stop.is_set():
            turn[0] += 1
            await traffic.timed(plan[turn[0] % len(plan)], time.perf_counter())
            done[0] += 1

    tasks = [asyncio.create_task(loop()) for _ in range(PROBE_CONCURRENCY)]
    await asyncio.sleep(min(1.0, seconds / 2))  # warm-up
    first, started = done[0], time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (done[0] - first) / (time.perf_counter() - started)
    stop.set()
    await asyncio.gather(*tasks)
    return rate


async def _open_loop(traffic: _Traffic, rate: float, seconds: float) -> tuple[float, float, float]:
    """Send the mix at ``rate`` for ``seconds``: (calls/s sent, p99 and max lateness in s)."""
    count = max(1, int(rate * seconds))
    plan = weighted_plan(MIX, count)
    tasks: set[asyncio.Task[None]] = set()
    late: list[float] = []
    started = time.perf_counter()
    for index, name in enumerate(plan):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(0.0, time.perf_counter() - due))
        while len(tasks) >= MAX_IN_FLIGHT:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(traffic.timed(name, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent = count / (time.perf_counter() - started)
    await asyncio.gather(*tasks)
    late.sort()
    return sent, percentile(late, 0.99), late[-1]


async def _issue_many(
    channels: list[grpc.aio.Channel], request: token_pb2.IssueRequest, count: int
) -> list[str]:
    out: list[str] = []
    stubs = [token_pb2_grpc.TokenServiceStub(c) for c in channels]

    async def worker(index: int, share: int) -> None:
        stub = stubs[index % len(stubs)]
        for _ in range(share):
            out.append((await stub.Issue(request)).tokens.access_token)

    await asyncio.gather(*(worker(i, count // 32 + (i < count % 32)) for i in range(32)))
    return out


async def _fill(channel: grpc.aio.Channel, tokens: list[str]) -> None:
    stub = token_pb2_grpc.TokenServiceStub(channel)
    queue = deque(tokens)

    async def worker() -> None:
        while queue:
            answer = await stub.Verify(token_pb2.VerifyRequest(token=queue.popleft()))
            if answer.result != token_pb2.VERIFY_RESULT_VALID:
                raise RuntimeError("a fill token did not verify")

    await asyncio.gather(*(worker() for _ in range(32)))


async def _measure(served: Served, seconds: float, probe: float, fill: int) -> SustainedResult:
    # The client library's channel options (its retry policy for streams the server
    # refused unrun under a burst): errors are what a library user would see.
    channels = [
        grpc.aio.insecure_channel(
            served.target, options=[("grpc.use_local_subchannel_pool", 1), *CHANNEL_OPTIONS]
        )
        for _ in range(CHANNELS)
    ]
    workers: dict[int, grpc.aio.Channel] = {}
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channels[0])
        auth = (("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),)
        created = await admin.CreateClient(
            admin_pb2.CreateClientRequest(
                client=admin_pb2.Client(
                    id="bench-sustained",
                    confidential=True,
                    grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                    audiences=["default"],
                )
            ),
            metadata=auth,
        )
        await admin.CreatePrincipal(
            admin_pb2.CreatePrincipalRequest(name="bench", password=PASSWORD), metadata=auth
        )
        stub = token_pb2_grpc.TokenServiceStub(channels[0])
        login = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal="bench", password=PASSWORD)
        )
        chains = [(await stub.Issue(login)).tokens.refresh_token for _ in range(CHAINS)]
        grant = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id="bench-sustained", client_secret=created.client_secret
            )
        )
        started = time.perf_counter()
        tokens = await _issue_many(channels, grant, REPEAT + REVOCABLE + fill)
        print(
            f"  issued {len(tokens):,} tokens in {time.perf_counter() - started:.1f} s", flush=True
        )
        repeat, revocable, fresh = (
            tokens[:REPEAT],
            tokens[REPEAT:-fill],
            tokens[-fill:],
        )
        workers = await _channel_per_worker(served)
        for channel in workers.values():  # the repeat tokens are cached in every worker
            await _fill(channel, repeat)
        before = {pid: rss_bytes(pid) for pid in served.pids}
        traffic = _Traffic(
            channels,
            secret=created.client_secret,
            repeat=repeat,
            fresh=fresh,
            chains=chains,
            revocable=revocable,
        )
        maximum = await _probe(traffic, probe)
        probe_errors, probe_samples = traffic.reset()
        offered = LOAD_SHARE * maximum
        print(
            f"  maximum of the mix (closed loop, {PROBE_CONCURRENCY} in flight, {probe:g} s):"
            f" {maximum:,.0f} calls/s; now {seconds:g} s at {offered:,.0f} calls/s",
            flush=True,
        )
        achieved, late, late_max = await _open_loop(traffic, offered, seconds)
        started = time.perf_counter()
        await asyncio.gather(*(_fill(channel, fresh) for channel in workers.values()))
        print(
            f"  filled {len(workers)} worker cache(s) with {len(fresh):,} never-seen tokens each"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        memory = [Memory(pid, before[pid], rss_bytes(pid), len(fresh)) for pid in workers]
        samples = probe_samples + traffic.samples
        samples += [
            f"no connection to worker {p} was found: not filled"
            for p in served.pids
            if p not in workers
        ]
        for stats in traffic.ops.values():
            stats.latencies.sort()
        return SustainedResult(
            maximum,
            offered,
            achieved,
            seconds,
            traffic.ops,
            late,
            late_max,
            memory,
            samples,
            traffic.fresh_exhausted,
            probe_errors,
        )
    finally:
        for channel in [*channels, *workers.values()]:
            await channel.close()


def run(
    database_url: str, redis_url: str, seconds: float, probe: float, fill: int
) -> SustainedResult:
    name = f"bench_{uuid.uuid4().hex}"
    asyncio.run(admin_sql(database_url, f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="authority-bench-sustained-") as workdir:
            served = Served(
                Path(workdir) / "data", production_env(database_url, redis_url, name), workers=2
            ).wait_ready()
            try:
                return asyncio.run(_measure(served, seconds, probe, fill))
            finally:
                served.stop()
    finally:
        asyncio.run(admin_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def print_sustained_report(result: SustainedResult) -> None:
    print(
        f"  sent {result.achieved:,.0f} calls/s of {result.offered:,.0f} asked"
        f" ({result.achieved / result.maximum:.0%} of the maximum); generator behind schedule"
        f" p99 {result.late_p99 * 1000:.1f} ms, max {result.late_max * 1000:.1f} ms (counted in the"
        " latencies)"
    )
    print(f"  {'RPC':<14} {'calls':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'errors':>7}")
    for name, stats in result.ops.items():
        if not stats.latencies:
            continue
        q = [percentile(stats.latencies, x) * 1000 for _, x in QUANTILES]
        print(
            f"  {name:<14} {len(stats.latencies):>8,} {q[0]:>8.2f} {q[1]:>8.2f} {q[2]:>9.2f}"
            f" {stats.errors:>7}"
        )
    if result.fresh_exhausted:
        print("  note: the never-verified pool ran out; later 'verify fresh' calls were repeats")
    for sample in result.samples:
        print(f"    e.g. {sample}")
    for m in result.memory:
        verdict = "meets" if m.per_token <= TARGET_BYTES_PER_TOKEN else "ABOVE"
        print(
            f"  worker {m.pid}: RSS {m.before / 2**20:,.1f} MiB before the load,"
            f" {m.after / 2**20:,.1f} MiB after {m.tokens:,} never-seen tokens"
            f" (verify cache holds {min(m.tokens, CACHE_SIZE):,}): {m.per_token:,.0f} bytes per"
            f" cached token {verdict} (target <= {TARGET_BYTES_PER_TOKEN:,}; an upper bound)"
        )
    print(
        f"  errors: {result.errors} ({result.probe_errors} in the probe; any error fails the bench)"
    )
