"""Several replicas on one store and one Redis: one key ring, one revocation view."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from authority_client import AuthorityClient

from authority.v1 import keys_pb2, token_pb2
from tests import services
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"


@pytest.fixture(params=["postgresql+redis", "sqlite+redis"])
def replicas(
    request: pytest.FixtureRequest,
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
) -> Iterator[list[ServerProcess]]:
    """Three server processes sharing state the way the given mode does: one PostgreSQL
    database (or one SQLite file) and one Redis."""
    env = {
        "AUTHORITY_REDIS_URL": services.redis_url(),
        "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
        "AUTHORITY_ISSUER": "https://auth.example.test",
        "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
        "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
        "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    }
    with ExitStack() as stack:
        if request.param.startswith("postgresql"):
            env["AUTHORITY_DATABASE_URL"] = stack.enter_context(services.fresh_database())
        # Separate data directories: with PostgreSQL nothing is shared through files.
        shared = request.param.startswith("sqlite")
        servers = [
            start_server(tmp_path / ("shared" if shared else f"replica-{i}"), **env)
            for i in range(3)
        ]
        yield servers
        for server in servers:
            server.kill()


def _jwks(server: ServerProcess) -> str:
    with server.client() as client:
        return client.jwks().jwks_json


def _rejected_after(client: AuthorityClient, token: str, since: float) -> float:
    """Seconds from ``since`` until this replica answers REVOKED for ``token``."""
    while client.verify(token).result != token_pb2.VERIFY_RESULT_REVOKED:
        if time.perf_counter() - since > 5:
            raise AssertionError("a replica never saw the revocation")
    return time.perf_counter() - since


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_rotations_from_any_replica_reach_every_replica(replicas: list[ServerProcess]) -> None:
    first, second, third = replicas
    assert len({_jwks(r) for r in replicas}) == 1  # one bootstrap key, not three
    with first.client() as client:
        client.create_principal("alice", PASSWORD)
    with second.client() as client:
        rotated = client.rotate_keys().next_key.kid
    _wait_for(lambda: len({_jwks(r) for r in replicas}) == 1)
    with third.client() as client:
        assert client.rotate_keys().next_key.kid == rotated  # still pending: idempotent
    documents = {_jwks(r) for r in replicas}
    assert len(documents) == 1
    assert rotated in documents.pop()
    # Every replica verifies tokens minted by every other.
    tokens = []
    for replica in replicas:
        with replica.client() as client:
            tokens.append(client.issue_with_password("alice", PASSWORD).access_token)
    for replica in replicas:
        with replica.client() as client:
            for token in tokens:
                assert client.verify(token).result == token_pb2.VERIFY_RESULT_VALID
    # An emergency removal on one replica is honoured by all: every token so far was
    # signed by the key that was active, which is the one declared compromised.
    with first.client() as client:
        signing = next(k.kid for k in client.list_keys() if k.state == keys_pb2.KEY_STATE_ACTIVE)
        active = client.compromise_key(signing).active_key.kid
    assert active == rotated  # the published pending key signs at once
    _wait_for(lambda: all(signing not in _jwks(r) for r in replicas))
    for replica in replicas:
        with replica.client() as client:
            for token in tokens:
                assert client.verify(token).result == token_pb2.VERIFY_RESULT_UNKNOWN_KEY


def test_a_revocation_on_one_replica_is_seen_by_the_others(
    replicas: list[ServerProcess],
) -> None:
    first, *others = replicas
    with first.client() as client:
        client.create_principal("bob", PASSWORD)
        tokens = [client.issue_with_password("bob", PASSWORD).access_token for _ in range(30)]
    lags: list[float] = []
    clients = [r.client() for r in others]
    with first.client() as revoker, ThreadPoolExecutor(len(clients)) as pool:
        for token in tokens:
            revoker.revoke(access_token=token)
            returned = time.perf_counter()
            waits = [pool.submit(_rejected_after, c, token, returned) for c in clients]
            lags.extend(w.result() for w in waits)
    for client in clients:
        client.close()
    # Correctness only; the bench measures the lag distribution properly.
    assert max(lags) < 5
    assert statistics.median(lags) < 1
