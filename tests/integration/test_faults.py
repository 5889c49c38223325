"""Real outages of the dependencies, with real server processes: Redis stops, PostgreSQL
stops. (A replica SIGKILLed mid-burst: tests/adversarial/test_crash_safety.py.)

What must hold throughout: Verify answers (from memory), readiness tells the truth while
liveness stays SERVING, every call that needs a missing dependency fails fast with
UNAVAILABLE (never INTERNAL, never a hang), and a revocation that was acknowledged is
durable and honoured everywhere. Outages use Redis and PostgreSQL instances of the test's
own (``own_services``); the shared services are never stopped.

Measured latencies are printed as ``faults:`` lines (see them with ``pytest -rP``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import redis
from authority_client import AuthorityClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authority.v1 import token_pb2
from tests import services
from tests.integration.own_services import own_postgres, own_redis
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"
# Fixed, so that every replica unwraps the same signing keys from the shared store.
SHARED = {
    "AUTHORITY_ISSUER": "https://auth.example.test",
    "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
VALID = token_pb2.VERIFY_RESULT_VALID
REVOKED = token_pb2.VERIFY_RESULT_REVOKED
MALFORMED = token_pb2.VERIFY_RESULT_MALFORMED
OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CALL_DEADLINE = 10.0  # no call may take longer, whatever is down

StartServer = Callable[..., ServerProcess]


# -- helpers ---------------------------------------------------------------------------


def report(what: str, **facts: Any) -> None:
    """One line of measurements for the test report (shown by ``pytest -rP``)."""
    print(f"faults: {what} " + json.dumps(facts, sort_keys=True, default=str))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until ``condition`` holds; returns the seconds it took."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    seconds: float
    value: Any = None


def outcome(call: Callable[[], Any]) -> Outcome:
    """Run one RPC and say how it ended and how long it took; never raises RpcError."""
    started = time.perf_counter()
    try:
        value = call()
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", time.perf_counter() - started)
    return Outcome(OK, "", time.perf_counter() - started, value)


def health(server: ServerProcess, service: str) -> int:
    with server.channel() as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(answer.status)


def http_status(server: ServerProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(server.http + path, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def wait_for_readiness(servers: list[ServerProcess], status: int, timeout: float) -> float:
    """Poll gRPC health until every server's readiness is ``status``; returns the seconds."""
    return wait_for(
        lambda: all(health(s, "readiness") == status for s in servers), timeout, "readiness"
    )


def assert_probes(server: ServerProcess, *, ready: bool) -> None:
    """gRPC health and the HTTP probes agree: liveness always, readiness as given."""
    assert health(server, "liveness") == SERVING
    assert health(server, "readiness") == (SERVING if ready else NOT_SERVING)
    assert http_status(server, "/healthz") == 200
    assert http_status(server, "/readyz") == (200 if ready else 503)


def jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def durable_revocations(database_url: str) -> set[tuple[str, str]]:
    """(kind, value) of every row of the store's ``revocations`` table, read directly."""

    async def fetch() -> set[tuple[str, str]]:
        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            rows = await connection.fetch("SELECT kind, value FROM revocations")
        finally:
            await connection.close()
        return {(row["kind"], row["value"]) for row in rows}

    return asyncio.run(fetch())


def verdict(client: AuthorityClient, token: str) -> token_pb2.VerifyResult.ValueType:
    return client.verify(token).result


def rejected_within(
    client: AuthorityClient, token: str, since: float, timeout: float
) -> tuple[float, float]:
    """Seconds from ``since`` until ``client``'s replica answers REVOKED for ``token``
    (the answer included), failing if that is not within ``timeout``; and the slowest
    single Verify meanwhile."""
    slowest = 0.0
    while True:
        asked = time.perf_counter()
        answer = verdict(client, token)
        slowest = max(slowest, time.perf_counter() - asked)
        elapsed = time.perf_counter() - since
        if answer == REVOKED and elapsed <= timeout:
            return elapsed, slowest
        if elapsed > timeout:
            raise AssertionError(
                f"the revocation was not seen within {timeout} s (after {elapsed:.3f} s the"
                f" answer was {token_pb2.VerifyResult.Name(answer)}; slowest Verify"
                f" {slowest:.3f} s)"
            )
        time.sleep(0.01)


def assert_clear_unavailable(result: Outcome, *secrets: str) -> None:
    """UNAVAILABLE within the deadline, with a message a caller can act on and that gives
    away nothing of the deployment (no URL, no password, no traceback)."""
    assert result.code is UNAVAILABLE, result
    assert result.seconds < CALL_DEADLINE, result
    assert "unavailable" in result.details.lower(), result
    for leak in ("postgresql://", "redis://", "Traceback", 'File "', *secrets):
        assert leak not in result.details, (leak, result)


@contextmanager
def clients(*servers: ServerProcess) -> Iterator[list[AuthorityClient]]:
    with ExitStack() as stack:
        yield [stack.enter_context(s.client()) for s in servers]


# -- 1. Redis stops ----------------------------------------------------------------------


def test_a_redis_outage_degrades_readiness_and_loses_no_revocation(
    start_server: StartServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid.uuid4().hex}"
    with ExitStack() as stack:
        database = stack.enter_context(services.fresh_database())
        bus = stack.enter_context(own_redis())
        env = {
            **SHARED,
            "AUTHORITY_DATABASE_URL": database,
            "AUTHORITY_REDIS_URL": bus.url,
            "AUTHORITY_REDIS_PREFIX": prefix,
            "AUTHORITY_REVOCATION_POLL": "200ms",
        }
        servers: list[ServerProcess] = []
        try:
            servers.append(start_server(tmp_path / "a", **env))
            servers.append(start_server(tmp_path / "b", **env))
            a, b = servers
            plain = stack.enter_context(redis.Redis.from_url(bus.url, socket_timeout=2))
            ca, cb = stack.enter_context(clients(a, b))

            def cached(kind: str, value: str) -> bool:
                return bool(plain.exists(f"{prefix}:rev:{kind}:{value}"))

            ca.create_principal("alice", PASSWORD)
            pairs = [ca.issue_with_password("alice", PASSWORD) for _ in range(9)]
            for pair in pairs:
                assert verdict(cb, pair.access_token) == VALID

            # Before: a revocation on A reaches B through the fan-out.
            ca.revoke(access_token=pairs[0].access_token)
            lag, _ = rejected_within(cb, pairs[0].access_token, time.perf_counter(), 1.0)
            assert cached("jti", jti(pairs[0].access_token))
            report("redis: fan-out lag before the outage", seconds=round(lag, 3))

            # -- the outage ---------------------------------------------------------
            bus.stop()
            stopped = time.perf_counter()
            wait_for_readiness(servers, NOT_SERVING, 5)
            not_ready_after = time.perf_counter() - stopped
            for server in servers:
                assert_probes(server, ready=False)

            # Revocations keep being acknowledged (durable first) and reach the other
            # replica through PostgreSQL polling.
            during: dict[tuple[str, str], str] = {}  # (kind, value) -> a token it covers
            lags: list[tuple[float, float]] = []
            revoke_times: list[float] = []
            for revoker, watcher, target in (
                (ca, cb, {"access_token": pairs[1].access_token}),
                (ca, cb, {"access_token": pairs[2].access_token}),
                (ca, cb, {"refresh_token": pairs[3].refresh_token}),  # the whole session
                (cb, ca, {"access_token": pairs[4].access_token}),
            ):
                result = outcome(partial(revoker.revoke, **target))
                assert result.code is OK, result
                revoke_times.append(result.seconds)
                ((name, token),) = target.items()
                if name == "access_token":
                    key, covered = ("jti", jti(token)), token
                else:
                    pair = next(p for p in pairs if p.refresh_token == token)
                    key, covered = ("sid", pair.session_id), pair.access_token
                during[key] = covered
                assert verdict(revoker, covered) == REVOKED  # here: at once
                lags.append(rejected_within(watcher, covered, time.perf_counter(), 2.0))
            # Nothing acknowledged is lost: every one is in PostgreSQL and rejected everywhere.
            assert set(during) <= durable_revocations(database)
            for client in (ca, cb):
                for token in during.values():
                    assert verdict(client, token) == REVOKED
                for pair in pairs[5:]:
                    assert verdict(client, pair.access_token) == VALID
            refused = outcome(lambda: cb.refresh(pairs[3].refresh_token))
            assert refused.code is grpc.StatusCode.UNAUTHENTICATED, refused

            # Logins: OK (per-process limits) or UNAVAILABLE, never INTERNAL, never a hang.
            logins: list[Outcome] = []
            for client in (ca, cb, ca, cb):
                logins.append(outcome(partial(client.issue_with_password, "alice", PASSWORD)))
            for login in logins:
                assert login.code in (OK, UNAVAILABLE), login
                assert login.seconds < CALL_DEADLINE, login
                if login.code is UNAVAILABLE:
                    assert_clear_unavailable(login)
                else:  # a token from either replica is good on both
                    for client in (ca, cb):
                        assert verdict(client, login.value.access_token) == VALID
            report(
                "redis: during the outage",
                not_ready_after=round(not_ready_after, 3),
                revoke_seconds=[round(s, 3) for s in revoke_times],
                seen_by_other_replica_after=[round(lag, 3) for lag, _ in lags],
                slowest_verify=round(max(slowest for _, slowest in lags), 3),
                logins=[(x.code.name, x.details, round(x.seconds, 3)) for x in logins],
            )

            # -- recovery -------------------------------------------------------------
            bus.start()
            restarted = time.perf_counter()
            wait_for_readiness(servers, SERVING, 12)
            ready_after = time.perf_counter() - restarted
            for server in servers:
                assert_probes(server, ready=True)
            # The emptied cache holds again what was revoked (before and during the outage).
            expected = [*during, ("jti", jti(pairs[0].access_token))]
            refilled_after = wait_for(
                lambda: all(cached(*key) for key in expected), 5, "cache refilled"
            )
            # And the fan-out carries new revocations again.
            ca.revoke(access_token=pairs[5].access_token)
            lag, _ = rejected_within(cb, pairs[5].access_token, time.perf_counter(), 1.0)
            assert cached("jti", jti(pairs[5].access_token))
            for client in (ca, cb):
                assert verdict(client, pairs[6].access_token) == VALID
            report(
                "redis: recovery",
                ready_after=round(ready_after, 3),
                cache_refilled_after_ready=round(refilled_after, 3),
                fanout_lag_after=round(lag, 3),
            )
        finally:
            for server in servers:
                server.kill()


# -- 2. PostgreSQL stops -----------------------------------------------------------------


def test_a_postgres_outage_keeps_verify_and_fails_writes_fast(
    start_server: StartServer, tmp_path: Path
) -> None:
    with own_postgres() as database:
        server = start_server(tmp_path / "data", **SHARED, AUTHORITY_DATABASE_URL=database.url)
        try:
            with server.client() as client:
                client.create_principal("alice", PASSWORD)
                pair = client.issue_with_password("alice", PASSWORD)
                spare = client.issue_with_password("alice", PASSWORD)
                assert_probes(server, ready=True)

                database.stop("immediate")
                stopped = time.perf_counter()

                # Verify answers from memory, at once.
                started = time.perf_counter()
                assert verdict(client, pair.access_token) == VALID
                assert verdict(client, "not.a.token") == MALFORMED
                verify_seconds = time.perf_counter() - started
                assert verify_seconds < 1.0

                calls: dict[str, Callable[[], Any]] = {
                    "issue": lambda: client.issue_with_password("alice", PASSWORD),
                    "refresh": lambda: client.refresh(pair.refresh_token),
                    "revoke_access": lambda: client.revoke(access_token=spare.access_token),
                    "revoke_refresh": lambda: client.revoke(refresh_token=spare.refresh_token),
                }
                # Right after the stop (pooled connections just died) and again later.
                first = {name: outcome(call) for name, call in calls.items()}
                wait_for_readiness([server], NOT_SERVING, 5)
                not_ready_after = time.perf_counter() - stopped
                assert_probes(server, ready=False)
                later = {name: outcome(call) for name, call in calls.items()}
                for result in (*first.values(), *later.values()):
                    assert_clear_unavailable(result, database.url)
                assert verdict(client, pair.access_token) == VALID
                assert verdict(client, spare.access_token) == VALID  # its revocation failed
                report(
                    "postgres: during the outage",
                    verify_seconds=round(verify_seconds, 4),
                    not_ready_after=round(not_ready_after, 3),
                    first={k: (round(v.seconds, 3), v.details) for k, v in first.items()},
                    later={k: round(v.seconds, 3) for k, v in later.items()},
                )

                # Back, same data and port: the same server process recovers by itself.
                database.start()
                restarted = time.perf_counter()
                issued: list[Outcome] = []

                def issue_works() -> bool:
                    issued.append(outcome(calls["issue"]))
                    assert issued[-1].code in (OK, UNAVAILABLE), issued[-1]
                    return issued[-1].code is OK

                wait_for(issue_works, 10, "Issue working again")
                issue_after = time.perf_counter() - restarted
                renewed = client.refresh(pair.refresh_token)
                assert verdict(client, renewed.access_token) == VALID
                client.revoke(access_token=renewed.access_token)
                assert verdict(client, renewed.access_token) == REVOKED
                client.revoke(refresh_token=spare.refresh_token)
                assert verdict(client, spare.access_token) == REVOKED
                wait_for_readiness([server], SERVING, 5)
                ready_after = time.perf_counter() - restarted
                assert_probes(server, ready=True)
                report(
                    "postgres: recovery",
                    issue_after=round(issue_after, 3),
                    ready_after=round(ready_after, 3),
                )
        finally:
            server.kill()
