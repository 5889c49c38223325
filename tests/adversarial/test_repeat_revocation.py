"""Repeat revocations are free and bounded.

Anyone holding a token may revoke it, without any other credential. Revoking what is
already revoked (or covered by a session's revocation), or an expired token, must write
nothing: no revocation row, no outbox event, no audit record, no fan-out. Concurrent
identical revocations write exactly once. Token-holder revocations are limited per source
address (shared across replicas through Redis), and the reason given is in the audit log.
Rows are counted in the database itself, on SQLite and on PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from authority_client import AuthorityClient

from authority.v1 import token_pb2
from tests import services
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"
REPEATS = 1000
VALID = token_pb2.VERIFY_RESULT_VALID
REVOKED = token_pb2.VERIFY_RESULT_REVOKED
TABLES = ("revocations", "outbox", "audit_log")
# What a revocation writes: its row, its event, the event's audit record. (Other users'
# refreshes meanwhile write events of their own, which are not counted.)
COUNTS = {
    "revocations": "SELECT count(*) FROM revocations",
    "outbox": "SELECT count(*) FROM outbox WHERE type LIKE 'revocation.%'",
    "audit_log": "SELECT count(*) FROM audit_log WHERE action LIKE 'revocation.%'",
}
GENEROUS = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_REVOKE_ATTEMPTS_PER_MINUTE": "1000000",
}

StartServer = Callable[..., ServerProcess]


@dataclass
class Deployment:
    """How to start replicas of one deployment, and how to count its rows directly."""

    backend: str
    env: dict[str, str]
    data_dir: Path

    def start(self, start_server: StartServer, name: str = "a", **env: str) -> ServerProcess:
        # SQLite replicas share the data directory (the file); PostgreSQL ones share the URL.
        data_dir = self.data_dir if self.backend == "sqlite" else self.data_dir / name
        return start_server(data_dir, **{**self.env, **env})

    def counts(self) -> dict[str, int]:
        if self.backend == "sqlite":
            database = self.data_dir / "authority.db"
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                return {
                    table: connection.execute(query).fetchone()[0]
                    for table, query in COUNTS.items()
                }

        async def fetch() -> dict[str, int]:
            connection = await asyncpg.connect(self.env["AUTHORITY_DATABASE_URL"], timeout=5)
            try:
                return {
                    table: int(await connection.fetchval(query)) for table, query in COUNTS.items()
                }
            finally:
                await connection.close()

        return asyncio.run(fetch())

    def settled_counts(self) -> dict[str, int]:
        """Counts once the audit consumer has caught up with the revocation events."""
        deadline = time.monotonic() + 20
        while True:
            counts = self.counts()
            if counts["audit_log"] == counts["outbox"]:
                return counts
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres+redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        yield Deployment("sqlite", {}, tmp_path / "data")
        return
    with services.fresh_database() as database:
        env = {
            "AUTHORITY_DATABASE_URL": database,
            "AUTHORITY_REDIS_URL": services.redis_url(),
            "AUTHORITY_REDIS_PREFIX": f"t{uuid.uuid4().hex[:12]}",
            # Fixed, so that replicas unwrap the same signing keys from the shared store.
            "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
            "AUTHORITY_ISSUER": "https://auth.example.test",
        }
        yield Deployment("postgres", env, tmp_path)


def written(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in TABLES}


def report(what: str, **facts: object) -> None:
    """One line of measurements for the report (``pytest -rP``)."""
    print(f"repeat-revocation: {what} " + json.dumps(facts, sort_keys=True))


@contextmanager
def refreshing(server: ServerProcess, refresh_token: str) -> Iterator[list[grpc.StatusCode]]:
    """Another user refreshes in a loop meanwhile; yields the outcome of each refresh."""
    outcomes: list[grpc.StatusCode] = []
    stop = False

    def run() -> None:
        token = refresh_token
        with server.client() as client:
            while not stop:
                try:
                    token = client.refresh(token).refresh_token
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    outcomes.append(error.code())

    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(run)
        try:
            yield outcomes
        finally:
            stop = True
            done.result()


def burst(server: ServerProcess, calls: list[dict[str, str]]) -> list[grpc.StatusCode]:
    """Every call a Revoke, 16 at a time; the status of each."""

    def revoke(client: AuthorityClient, target: dict[str, str]) -> grpc.StatusCode:
        try:
            client.revoke(**target)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with server.client() as client, ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda target: revoke(client, target), calls))


def test_repeat_revocations_write_nothing(
    deployment: Deployment, start_server: StartServer
) -> None:
    server = deployment.start(start_server, **GENEROUS)
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        client.create_principal("bob", PASSWORD)
        alice = client.issue_with_password("alice", PASSWORD)
        bob = client.issue_with_password("bob", PASSWORD)
        start = deployment.settled_counts()

        with refreshing(server, bob.refresh_token) as bob_refreshes:
            # 1,000 concurrent revocations of one refresh token: exactly one write.
            first = burst(server, [{"refresh_token": alice.refresh_token}] * REPEATS)
            once = deployment.settled_counts()
            # 1,000 more of what that already covers: the session's access token, the
            # session by id (admin), the refresh token again. Nothing at all.
            targets = [
                {"access_token": alice.access_token},
                {"session_id": alice.session_id},
                {"refresh_token": alice.refresh_token},
            ]
            second = burst(server, [targets[i % 3] for i in range(REPEATS)])
            again = deployment.settled_counts()

        assert set(first) == set(second) == {grpc.StatusCode.OK}
        report(
            deployment.backend,
            first_burst_rows=written(start, once),
            second_burst_rows=written(once, again),
            bob_refreshes=len(bob_refreshes),
        )
        assert written(start, once) == {"revocations": 1, "outbox": 1, "audit_log": 1}
        assert written(once, again) == {"revocations": 0, "outbox": 0, "audit_log": 0}
        assert bob_refreshes and set(bob_refreshes) == {grpc.StatusCode.OK}

        assert client.verify(alice.access_token).result == REVOKED
        with pytest.raises(grpc.RpcError) as refused:
            client.refresh(alice.refresh_token)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert client.verify(bob.access_token).result == VALID


def test_revoking_an_expired_token_writes_nothing(
    deployment: Deployment, start_server: StartServer
) -> None:
    server = deployment.start(
        start_server, AUTHORITY_ACCESS_TOKEN_TTL="1s", AUTHORITY_LEEWAY="0s", **GENEROUS
    )
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        pair = client.issue_with_password("alice", PASSWORD)
        exp = pair.access_token_expires_at.seconds
        while time.time() < exp + 0.1:  # the token's own expiry, not a race
            time.sleep(0.1)
        assert client.verify(pair.access_token).result == token_pb2.VERIFY_RESULT_EXPIRED
        before = deployment.settled_counts()

        assert set(burst(server, [{"access_token": pair.access_token}] * 50)) == {
            grpc.StatusCode.OK
        }

        assert written(before, deployment.settled_counts()) == {
            "revocations": 0,
            "outbox": 0,
            "audit_log": 0,
        }


def test_token_holder_revocation_is_limited_per_source(
    deployment: Deployment, start_server: StartServer
) -> None:
    limited = {**GENEROUS, "AUTHORITY_REVOKE_ATTEMPTS_PER_MINUTE": "4"}  # a burst of 2
    # With Redis, two replicas draw on one budget: per process, they would allow twice it.
    replicas = [deployment.start(start_server, "a", **limited)]
    if deployment.backend != "sqlite":
        replicas.append(deployment.start(start_server, "b", **limited))
    with replicas[0].client() as client:
        client.create_principal("alice", PASSWORD)
        client.create_principal("bob", PASSWORD)
        pairs = [client.issue_with_password("alice", PASSWORD) for _ in range(12)]
        bob = client.issue_with_password("bob", PASSWORD)

    outcomes: list[grpc.RpcError | None] = []
    for i, pair in enumerate(pairs):
        with replicas[i % len(replicas)].client() as anonymous:
            try:
                anonymous.revoke(refresh_token=pair.refresh_token)
                outcomes.append(None)
            except grpc.RpcError as failure:
                outcomes.append(failure)

    refused = [outcome for outcome in outcomes if outcome is not None]
    # The burst, plus one refill should the machine be very slow (one per 15 s).
    assert len(outcomes) - len(refused) <= 3, f"{len(outcomes) - len(refused)} admitted"
    for rejection in refused:
        assert rejection.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = {item.key: item.value for item in rejection.trailing_metadata() or ()}
        assert int(trailers["retry-after"]) >= 1
    report(deployment.backend, revokes=len(outcomes), refused=len(refused))

    with replicas[-1].client() as client:
        # Other work from the same address is not held up: refresh, login, admin revocation.
        assert client.refresh(bob.refresh_token).access_token
        assert client.issue_with_password("alice", PASSWORD).access_token
        client.revoke(session_id=pairs[-1].session_id)
        assert client.verify(pairs[-1].access_token).result == REVOKED


def test_the_reason_is_in_the_audit_log_and_bounded(
    deployment: Deployment, start_server: StartServer
) -> None:
    server = deployment.start(start_server, **GENEROUS)
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        pair = client.issue_with_password("alice", PASSWORD)

        with pytest.raises(grpc.RpcError) as too_long:
            client.revoke(refresh_token=pair.refresh_token, reason="x" * 257)
        assert too_long.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "reason" in (too_long.value.details() or "")
        assert client.verify(pair.access_token).result == VALID  # refused: nothing revoked

        client.revoke(refresh_token=pair.refresh_token, reason="phone lost")
        deadline = time.monotonic() + 20
        while not (events := list(client.list_audit_events(action="revocation.session").events)):
            assert time.monotonic() < deadline, "no revocation.session audit event"
            time.sleep(0.05)
        assert [json.loads(e.details_json).get("reason") for e in events] == ["phone lost"]
        assert [e.target for e in events] == [pair.session_id]
