"""Part 7 of ``make bench``: Refresh on PostgreSQL next to its statements on bare asyncpg.

One ``authority serve`` on a fresh database (PostgreSQL + Redis, as in production) runs
Refresh with 16 calls in flight, each on its own session chain. In the same run, on the
same database, 16 asyncpg tasks over a pool of the server's size (10) run the bare
side: what one refresh sends PostgreSQL, statement for statement, of the same shapes.
A refresh sends two statements and no BEGIN or COMMIT (authority/store/postgres/
sessions.py): one SELECT reading the token, its session, its successor, the principal
and the client, then one statement whose CTEs consume the token (a conditional UPDATE)
and INSERT its successor and the outbox event, committed on its own (a statement is its
own transaction). So the bare side is a SELECT of two rows, then a CTE statement of an
UPDATE and two INSERTs, each in autocommit: two round trips, as a refresh makes. The
same two statements between BEGIN and COMMIT (four round trips, the bare side this part
measured before it matched the refresh's round trips) are shown too, for reference
only. Rounds interleave the three.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served

CONCURRENCY = 16
POOL_SIZE = 10  # the server's asyncpg pool (authority/store/postgres/database.py)
STATEMENTS = 2  # a refresh's statements on PostgreSQL (authority/store/postgres/sessions.py)
PASSWORD = "bench passphrase that is long enough"
KEK = "YmVuY2gta2VrLWJlbmNoLWtlay1iZW5jaC1rZWstMzI"
ROWS = 10_000
TARGET = 0.5


@dataclass(frozen=True)
class RefreshResult:
    refresh: list[float]  # calls/s per round
    bare: list[float]  # per round: the refresh's statements, each in autocommit, per s
    failures: int
    # Per round: the same statements between BEGIN and COMMIT (reference only), per s.
    transaction: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [r / b for r, b in zip(self.refresh, self.bare, strict=True) if b]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def production_env(database_url: str, redis_url: str, name: str) -> dict[str, str]:
    """The environment of a server on database ``name`` with Redis keys under ``name``."""
    return {
        "AUTHORITY_DATABASE_URL": database_url_for(database_url, name),
        "AUTHORITY_REDIS_URL": redis_url,
        "AUTHORITY_REDIS_PREFIX": name,
        "AUTHORITY_ISSUER": "https://bench.example.test",
        "AUTHORITY_KEK": KEK,
    }


def database_url_for(database_url: str, name: str) -> str:
    return urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))


async def admin_sql(database_url: str, statement: str) -> None:
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _closed_loop(step: Callable[[int], Awaitable[None]], seconds: float) -> tuple[float, int]:
    """Run ``CONCURRENCY`` copies of ``step(i)`` in a loop for ``seconds``: (per s, failures)."""
    stop = asyncio.Event()
    done, failed = [0], [0]

    async def loop(index: int) -> None:
        while not stop.is_set():
            try:
                await step(index)
                done[0] += 1
            except (grpc.aio.AioRpcError, asyncpg.PostgresError):
                failed[0] += 1

    tasks = [asyncio.create_task(loop(i)) for i in range(CONCURRENCY)]
    await asyncio.sleep(seconds * 0.2)  # warm-up, not counted
    first, started = done[0], time.perf_counter()
    await asyncio.sleep(seconds)
    count, elapsed = done[0] - first, time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    return count / elapsed, failed[0]


async def _measure(served: Served, dsn: str, rounds: int, seconds: float) -> RefreshResult:
    async with grpc.aio.insecure_channel(served.target) as channel:
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        await admin_pb2_grpc.AdminServiceStub(channel).CreatePrincipal(
            admin_pb2.CreatePrincipalRequest(name="bench", password=PASSWORD),
            metadata=(("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),),
        )
        login = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal="bench", password=PASSWORD)
        )
        chains = [(await tokens.Issue(login)).tokens.refresh_token for _ in range(CONCURRENCY)]

        async def refresh(index: int) -> None:
            answer = await tokens.Refresh(token_pb2.RefreshRequest(refresh_token=chains[index]))
            chains[index] = answer.tokens.refresh_token

        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    "CREATE TABLE bench_rows (k bytea PRIMARY KEY, v bytea NOT NULL,"
                    " n integer NOT NULL, touched timestamptz);"
                    " CREATE TABLE bench_log (id bigserial PRIMARY KEY, k bytea NOT NULL,"
                    " at timestamptz NOT NULL)"
                )
                await conn.copy_records_to_table(
                    "bench_rows",
                    records=[(i.to_bytes(32, "big"), os.urandom(64), 0, None) for i in range(ROWS)],
                    columns=["k", "v", "n", "touched"],
                )
            counter = [ROWS]

            def keys() -> tuple[bytes, bytes, bytes]:
                counter[0] += 1
                new, key = counter[0].to_bytes(32, "big"), (counter[0] % ROWS).to_bytes(32, "big")
                return new, key, ((counter[0] * 7919) % ROWS).to_bytes(32, "big")

            async def statements(conn: asyncpg.pool.PoolConnectionProxy) -> None:
                new, key, other = keys()
                await conn.fetchrow(
                    "SELECT a.v, a.n, b.n FROM bench_rows a"
                    " LEFT JOIN bench_rows b ON b.k = $2 WHERE a.k = $1",
                    key,
                    other,
                )
                await conn.fetchrow(
                    "WITH u AS (UPDATE bench_rows SET n = n + 1, touched = now()"
                    " WHERE k = $1 RETURNING 1),"
                    " i AS (INSERT INTO bench_rows (k, v, n) SELECT $2, $3, 0 FROM u),"
                    " l AS (INSERT INTO bench_log (k, at) SELECT $1, now() FROM u)"
                    " SELECT count(*) FROM u",
                    key,
                    new,
                    os.urandom(64),
                )

            async def bare(index: int) -> None:
                async with pool.acquire() as conn:
                    await statements(conn)

            async def transaction(index: int) -> None:
                async with pool.acquire() as conn, conn.transaction():
                    await statements(conn)

            refreshed: list[float] = []
            bared: list[float] = []
            transacted: list[float] = []
            failures = 0
            for _ in range(rounds):
                for step, rates in (
                    (refresh, refreshed),
                    (bare, bared),
                    (transaction, transacted),
                ):
                    rate, failed = await _closed_loop(step, seconds)
                    rates.append(rate)
                    failures += failed
        finally:
            await pool.close()
    return RefreshResult(refreshed, bared, failures, transacted)


def run(database_url: str, redis_url: str, rounds: int, seconds: float) -> RefreshResult:
    name = f"bench_{uuid.uuid4().hex}"
    asyncio.run(admin_sql(database_url, f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="authority-bench-pgrefresh-") as workdir:
            served = Served(
                Path(workdir) / "data", production_env(database_url, redis_url, name)
            ).wait_ready()
            try:
                return asyncio.run(
                    _measure(served, database_url_for(database_url, name), rounds, seconds)
                )
            finally:
                served.stop()
    finally:
        asyncio.run(admin_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def print_refresh_report(result: RefreshResult) -> None:
    rows = [
        ("Refresh (authority, PostgreSQL)", result.refresh),
        (f"bare asyncpg, {STATEMENTS} statements, each its own commit", result.bare),
    ]
    if result.transaction:
        rows.append(("  for reference: BEGIN, the same, COMMIT", result.transaction))
    for label, rates in rows:
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {label:<52} {statistics.median(rates):>8,.0f}/s  ({shown})")
    print(
        f"  (a refresh sends {STATEMENTS} statements and no BEGIN or COMMIT, so the bare side"
        f" sends {STATEMENTS} of the same shapes in autocommit: a SELECT of two rows, and one"
        " statement of an UPDATE and two INSERTs, committed on its own)"
    )
    verdict = "meets" if result.ratio >= TARGET else "BELOW"
    print(
        f"  Refresh / bare statements: {result.ratio:.2f}x {verdict}  (target >= {TARGET}x);"
        f" failures {result.failures}"
    )
    if result.transaction:
        ratio = statistics.median(result.refresh) / statistics.median(result.transaction)
        print(f"  (Refresh / the same statements between BEGIN and COMMIT: {ratio:.2f}x)")
