"""Part 4 of ``make bench``: how long a revocation takes to reach the other replicas.

Three replicas on one PostgreSQL database and one Redis (production mode). For each
of N access tokens: Revoke on replica A, then poll Verify on B and C until they
answer REVOKED; the lag is from Revoke returning on A to each replica's first
REVOKED. Tokens come from the client-credentials grant (cheap: no argon2), each
with its own ``jti``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import redis

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served

POLL_TIMEOUT = 5.0


@dataclass(frozen=True)
class PropagationResult:
    revocations: int
    lags: list[float]  # seconds, one per (revocation, other replica)
    timeouts: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def services_problem(database_url: str, redis_url: str) -> str | None:
    """Why the production part cannot run here, or None."""
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2) as r:
            r.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis unreachable ({type(exc).__name__})"

    async def probe() -> None:
        connection = await asyncpg.connect(database_url, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL unreachable ({type(exc).__name__})"
    return None


async def _admin_sql(database_url: str, statement: str) -> None:
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _until_revoked(
    stub: token_pb2_grpc.TokenServiceAsyncStub, token: str, since: float
) -> float:
    request = token_pb2.VerifyRequest(token=token)
    while True:
        answer = await stub.Verify(request)
        if answer.result == token_pb2.VERIFY_RESULT_REVOKED:
            return time.perf_counter() - since
        if time.perf_counter() - since > POLL_TIMEOUT:
            raise TimeoutError
        if answer.result != token_pb2.VERIFY_RESULT_VALID:
            raise RuntimeError(f"unexpected verdict {answer.result}")


async def _measure(replicas: list[Served], revocations: int) -> PropagationResult:
    first, *others = replicas
    async with grpc.aio.insecure_channel(first.target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        tokens_a = token_pb2_grpc.TokenServiceStub(channel)
        created = await admin.CreateClient(
            admin_pb2.CreateClientRequest(
                client=admin_pb2.Client(
                    id="bench-propagation",
                    confidential=True,
                    grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                    audiences=["default"],
                )
            ),
            metadata=(("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),),
        )
        grant = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id="bench-propagation", client_secret=created.client_secret
            )
        )
        tokens = [(await tokens_a.Issue(grant)).tokens.access_token for _ in range(revocations)]
        other_channels = [grpc.aio.insecure_channel(r.target) for r in others]
        stubs = [token_pb2_grpc.TokenServiceStub(c) for c in other_channels]
        for stub in stubs:  # every replica knows the key and answers VALID first
            answer = await stub.Verify(token_pb2.VerifyRequest(token=tokens[0]))
            if answer.result != token_pb2.VERIFY_RESULT_VALID:
                raise RuntimeError("a replica does not verify the first token")
        lags: list[float] = []
        timeouts = 0
        try:
            for token in tokens:
                await tokens_a.Revoke(token_pb2.RevokeRequest(access_token=token))
                returned = time.perf_counter()
                results = await asyncio.gather(
                    *(_until_revoked(s, token, returned) for s in stubs), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, float):
                        lags.append(result)
                    elif isinstance(result, TimeoutError):
                        timeouts += 1
                    else:
                        raise result
        finally:
            for other in other_channels:
                await other.close()
    return PropagationResult(revocations, lags, timeouts)


def run(database_url: str, redis_url: str, revocations: int) -> PropagationResult:
    name = f"bench_{uuid.uuid4().hex}"
    asyncio.run(_admin_sql(database_url, f'CREATE DATABASE "{name}"'))
    replicas: list[Served] = []
    try:
        with tempfile.TemporaryDirectory(prefix="authority-bench-replicas-") as workdir:
            env = {
                "AUTHORITY_DATABASE_URL": urlunsplit(
                    urlsplit(database_url)._replace(path=f"/{name}")
                ),
                "AUTHORITY_REDIS_URL": redis_url,
                "AUTHORITY_REDIS_PREFIX": name,
                "AUTHORITY_ISSUER": "https://bench.example.test",
                "AUTHORITY_KEK": "YmVuY2gta2VrLWJlbmNoLWtlay1iZW5jaC1rZWstMzI",
            }
            try:
                for index in range(3):
                    replicas.append(Served(Path(workdir) / f"r{index}", env).wait_ready())
                return asyncio.run(_measure(replicas, revocations))
            finally:
                for replica in replicas:
                    replica.stop()
    finally:
        asyncio.run(_admin_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def print_propagation_report(result: PropagationResult) -> None:
    ms = [lag * 1000 for lag in result.lags]
    print(
        f"  {result.revocations:,} revocations on replica A, {len(ms):,} observations on B and C:"
        f" p50 {result.quantile(0.5) * 1000:.1f} ms, p90 {result.quantile(0.9) * 1000:.1f} ms,"
        f" p99 {result.quantile(0.99) * 1000:.1f} ms, max {max(ms):.1f} ms,"
        f" mean {statistics.fmean(ms):.1f} ms; timeouts {result.timeouts}  (target p99 <= 50 ms)"
    )
