"""Crash safety: SIGKILL mid-burst loses no acknowledged revocation and forks no session.

A real server is killed with SIGKILL (nothing flushed, nothing said to anyone) while
revocations, by refresh token and by access token, and refreshes of many sessions are in
flight. After a restart on the same store (SQLite file, or PostgreSQL without Redis, so the
durable record alone must carry everything):

- every revocation that was acknowledged is in force: the session's refresh tokens are
  refused and every access token of it is REVOKED, as is every token revoked by itself;
- every session has at most one live head (one unconsumed refresh token), and a client
  whose last refresh was lost in the crash retries with its last acknowledged token and
  gets the session back (the grace window's replay), never a fork.

Calls in flight at the kill were not acknowledged; either outcome is allowed for them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from authority.v1 import token_pb2
from tests import services
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"
SESSIONS = 48
REVOKE_BEFORE_KILL = 16  # acknowledged revocations, then SIGKILL while the rest are in flight
VALID = token_pb2.VERIFY_RESULT_VALID
REVOKED = token_pb2.VERIFY_RESULT_REVOKED
ENV = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_REVOKE_ATTEMPTS_PER_MINUTE": "100000",
    # Long enough to cover the restart: a client retrying a refresh whose answer the crash
    # swallowed gets the same successor back.
    "AUTHORITY_REFRESH_GRACE": "2m",
    "AUTHORITY_ISSUER": "https://auth.example.test",
}
# Fixed, so that the restarted server unwraps the same signing keys from PostgreSQL.
KEK = "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc"
MULTIPLE_HEADS = (
    "SELECT session_id FROM refresh_tokens WHERE consumed_at IS NULL"
    " GROUP BY session_id HAVING count(*) > 1"
)

StartServer = Callable[..., ServerProcess]


@dataclass
class Store:
    """Where the restarted server finds its state, and a direct look at it."""

    data_dir: Path
    env: dict[str, str]

    def forked_sessions(self) -> list[str]:
        url = self.env.get("AUTHORITY_DATABASE_URL")
        if url is None:
            database = self.data_dir / "authority.db"
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
                return [row[0] for row in connection.execute(MULTIPLE_HEADS)]

        async def fetch() -> list[str]:
            connection = await asyncpg.connect(url, timeout=5)
            try:
                return [row[0] for row in await connection.fetch(MULTIPLE_HEADS)]
            finally:
                await connection.close()

        return asyncio.run(fetch())


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield Store(tmp_path / "data", dict(ENV))
        return
    with services.fresh_database() as database:
        yield Store(
            tmp_path / "data", {**ENV, "AUTHORITY_DATABASE_URL": database, "AUTHORITY_KEK": KEK}
        )


@dataclass
class Session:
    """What the client side was told about one session."""

    session_id: str
    first_refresh: str
    access_tokens: list[str] = field(default_factory=list)
    refresh_token: str = ""  # the last acknowledged
    revoked: bool = False  # acknowledged revocation of the whole session
    revoke_sent: bool = False
    jti_revoked: list[str] = field(default_factory=list)  # acknowledged, by access token


@dataclass
class Burst:
    sessions: list[Session]
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: int = 0
    enough: threading.Event = field(default_factory=threading.Event)
    dead: threading.Event = field(default_factory=threading.Event)

    def refresh_loop(self, server: ServerProcess, mine: list[Session]) -> None:
        with server.client() as client:
            while not self.dead.is_set():
                for session in mine:
                    try:
                        pair = client.refresh(session.refresh_token)
                    except grpc.RpcError as error:
                        if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                            continue  # revoked meanwhile
                        self.dead.set()
                        return
                    with self.lock:
                        session.access_tokens.append(pair.access_token)
                        session.refresh_token = pair.refresh_token

    def revoke_loop(self, server: ServerProcess, mine: list[Session]) -> None:
        with server.client() as client:
            for index, session in enumerate(mine):
                with self.lock:
                    access_token = session.access_tokens[-1]
                    session.revoke_sent = index % 3 != 0
                try:
                    if index % 3 == 0:  # one access token only: the session lives on
                        client.revoke(access_token=access_token)
                    else:
                        client.revoke(refresh_token=session.first_refresh)
                except grpc.RpcError:
                    self.dead.set()
                    return
                with self.lock:
                    if index % 3 == 0:
                        session.jti_revoked.append(access_token)
                    else:
                        session.revoked = True
                    self.acknowledged += 1
                    if self.acknowledged >= REVOKE_BEFORE_KILL:
                        self.enough.set()
            self.enough.set()


def test_sigkill_mid_burst_loses_no_acknowledged_revocation_and_forks_no_session(
    store: Store, start_server: StartServer
) -> None:
    server = start_server(store.data_dir, **store.env)
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        sessions = []
        for _ in range(SESSIONS):
            pair = client.issue_with_password("alice", PASSWORD)
            sessions.append(
                Session(
                    pair.session_id, pair.refresh_token, [pair.access_token], pair.refresh_token
                )
            )
    burst = Burst(sessions)
    with ThreadPoolExecutor(6) as pool:
        tasks = [pool.submit(burst.refresh_loop, server, sessions[i::4]) for i in range(4)]
        tasks += [pool.submit(burst.revoke_loop, server, sessions[i::2]) for i in range(2)]
        assert burst.enough.wait(120), "the revocations were not acknowledged in time"
        server.kill()  # SIGKILL, with refreshes and revocations in flight
        burst.dead.set()
        for task in tasks:
            task.result()
    acknowledged = [s for s in sessions if s.revoked]
    in_flight = [s for s in sessions if s.revoke_sent and not s.revoked]
    assert len(acknowledged) + sum(len(s.jti_revoked) for s in sessions) >= REVOKE_BEFORE_KILL

    restarted = start_server(store.data_dir, **store.env)
    assert store.forked_sessions() == []
    with restarted.client() as client:
        for session in acknowledged:
            for token in session.access_tokens:
                assert client.verify(token).result == REVOKED, session.session_id
            for refresh in {session.first_refresh, session.refresh_token}:
                with pytest.raises(grpc.RpcError) as refused:
                    client.refresh(refresh)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        for session in sessions:
            for token in session.jti_revoked:
                assert client.verify(token).result == REVOKED, session.session_id
        live = [s for s in sessions if not s.revoke_sent]
        assert live, "every session was revoked: nothing left to check for forks"
        for session in live:
            # The last acknowledged refresh token: the head, or (when the crash swallowed
            # its successor's answer) replayed to the same successor. Never refused.
            pair = client.refresh(session.refresh_token)
            again = client.refresh(session.refresh_token)
            assert again.refresh_token == pair.refresh_token  # one successor, not two
            assert client.verify(pair.access_token).result == VALID
    assert store.forked_sessions() == []
    print(
        f"crash-safety: {len(acknowledged)} session and"
        f" {sum(len(s.jti_revoked) for s in sessions)} token revocations acknowledged,"
        f" {len(in_flight)} in flight at the kill,"
        f" {sum(len(s.access_tokens) for s in sessions)} pairs acknowledged"
    )
