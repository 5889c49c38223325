"""Adversarial: losing Redis neither stretches revocation propagation nor lifts a lockout.

Two real replicas share a fresh PostgreSQL database and a Redis of the test's own
(``own_services``: the shared Redis is never stopped), which is stopped and started
again; it has no persistence, so it comes back empty, like a lost node.

- While Redis is down, a revocation acknowledged by one replica is rejected by the other
  within the documented bound, ``AUTHORITY_REVOCATION_POLL``, from the first revocation
  after the stop on (the poll that slept at the slow interval while pub/sub was
  connected is woken when the fan-out drops).
- A lockout imposed before the outage stays in force during it and after Redis comes
  back empty, on every replica; one imposed during the outage holds on every replica.

Numbers are printed as ``outage:`` lines (``pytest -rP``).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
from authority_client import AuthorityClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authority.v1 import token_pb2
from tests import services
from tests.integration.own_services import OwnRedis, own_redis
from tests.integration.server import ServerProcess

PASSWORD = "a perfectly fine passphrase"
WRONG = "not the passphrase at all"
SHARED = {
    "AUTHORITY_ISSUER": "https://auth.example.test",
    "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
}
POLL = 1.0  # AUTHORITY_REVOCATION_POLL: the documented bound during an outage (the default)
# What a revocation may take on top of the poll interval: the poll's own query and the
# watcher's Verify round trips, on a machine shared with other test runs (1.67 s was seen
# once at load 10+ with a margin of half a poll). The bug this guards against is a poll
# left asleep at the slow interval, five polls: the first revocation after each stop then
# waits a uniform 0-5 s on each replica, so all six of them (3 outages x 2 replicas) fall
# under 2 s with probability 0.4^6 < 0.5%. The bound still catches it; load does not trip it.
MARGIN = 1.0 * POLL
SERVING = health_pb2.HealthCheckResponse.SERVING
REVOKED = token_pb2.VERIFY_RESULT_REVOKED
VALID = token_pb2.VERIFY_RESULT_VALID
LOCKED = grpc.StatusCode.RESOURCE_EXHAUSTED

StartServer = Callable[..., ServerProcess]


def report(what: str, **facts: Any) -> None:
    print(f"outage: {what} " + json.dumps(facts, sort_keys=True, default=str))


def jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def ready(server: ServerProcess) -> bool:
    with server.channel() as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="readiness"), timeout=5
        )
    return answer.status == SERVING


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@contextmanager
def two_replicas(
    start_server: StartServer, tmp_path: Path, **env: str
) -> Iterator[tuple[OwnRedis, list[ServerProcess], list[AuthorityClient]]]:
    with ExitStack() as stack:
        database = stack.enter_context(services.fresh_database())
        bus = stack.enter_context(own_redis())
        settings = {
            **SHARED,
            "AUTHORITY_DATABASE_URL": database,
            "AUTHORITY_REDIS_URL": bus.url,
            "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
            **env,
        }
        servers = [start_server(tmp_path / name, **settings) for name in ("a", "b")]
        try:
            clients = [stack.enter_context(s.client()) for s in servers]
            yield bus, servers, clients
        finally:
            for server in servers:
                server.kill()


def seen_after(watchers: dict[str, tuple[AuthorityClient, float]], timeout: float) -> list[float]:
    """For each token, the seconds from its revocation's acknowledgement (the float) until
    its watcher's replica answers REVOKED (that answer included)."""
    lags: dict[str, float] = {}
    while len(lags) < len(watchers):
        for token, (watcher, acknowledged) in watchers.items():
            if token not in lags and watcher.verify(token).result == REVOKED:
                lags[token] = time.perf_counter() - acknowledged
        elapsed = max(time.perf_counter() - ack for _, ack in watchers.values())
        if len(lags) < len(watchers) and elapsed > timeout:
            raise AssertionError(f"not every revocation was seen within {timeout} s: {lags}")
        time.sleep(0.01)
    return [lags[token] for token in watchers]


def test_revocations_reach_the_other_replica_within_the_poll_bound_during_an_outage(
    start_server: StartServer, tmp_path: Path
) -> None:
    with two_replicas(
        start_server,
        tmp_path,
        AUTHORITY_REVOCATION_POLL=f"{POLL}s",
        AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE="1000",
    ) as (
        bus,
        servers,
        (ca, cb),
    ):
        ca.create_principal("alice", PASSWORD)
        outages, per_outage = 3, 4
        pairs = [ca.issue_with_password("alice", PASSWORD) for _ in range(outages * per_outage)]
        lags: list[float] = []
        firsts: list[float] = []
        for outage in range(outages):
            batch = pairs[outage * per_outage : (outage + 1) * per_outage]
            wait_until(lambda: all(ready(s) for s in servers), 15, "fan-out connected")
            bus.stop()
            # At once: the first revocations after the stop are the ones a sleeping poll
            # would hold back. One each way, so both replicas' polls are put to the test.
            watchers: dict[str, tuple[AuthorityClient, float]] = {}
            for i, pair in enumerate(batch):
                revoker, watcher = (ca, cb) if i % 2 == 0 else (cb, ca)
                # By jti, as an admin: the fault under test is propagation, not any limit.
                revoker.revoke(token_id=jti(pair.access_token))
                watchers[pair.access_token] = (watcher, time.perf_counter())
                if i == 1:
                    found = seen_after(watchers, 10 * POLL)
                    firsts += found
                    lags += found
                    watchers = {}
            lags += seen_after(watchers, 10 * POLL)
            bus.start()
        for pair in pairs:
            for client in (ca, cb):
                assert client.verify(pair.access_token).result == REVOKED
    ordered = sorted(lags)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    report(
        "propagation during the outage",
        samples=len(lags),
        p50=round(statistics.median(lags), 3),
        p99=round(p99, 3),
        first_after_stop=[round(x, 3) for x in firsts],
        bound=POLL,
        margin=MARGIN,
    )
    assert p99 <= POLL + MARGIN, (p99, ordered)


def test_lockouts_hold_through_an_outage_and_an_empty_redis(
    start_server: StartServer, tmp_path: Path
) -> None:
    # Locks long enough to outlast the test, whatever the machine's speed.
    with two_replicas(start_server, tmp_path, AUTHORITY_LOCKOUT_BASE="10m") as (
        bus,
        servers,
        (ca, cb),
    ):
        ca.create_principal("alice", PASSWORD)
        ca.create_principal("bob", PASSWORD)

        def login(client: AuthorityClient, name: str, password: str) -> grpc.StatusCode:
            try:
                client.issue_with_password(name, password)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        # Before: alice is locked (through Redis) after five wrong passwords on A.
        assert [login(ca, "alice", WRONG) for _ in range(5)] == [
            grpc.StatusCode.UNAUTHENTICATED
        ] * 5
        assert login(cb, "alice", PASSWORD) is LOCKED

        bus.stop()
        during = {"a": login(ca, "alice", PASSWORD), "b": login(cb, "alice", PASSWORD)}
        # During: bob is locked on B (its local gate); A must honour it too.
        bob = [login(cb, "bob", WRONG) for _ in range(5)]
        bob_on_a = login(ca, "bob", PASSWORD)

        bus.start()  # empty: every Redis lock is gone
        wait_until(lambda: all(ready(s) for s in servers), 15, "fan-out reconnected")
        after = {
            "alice": [login(c, "alice", PASSWORD) for c in (ca, cb)],
            "bob": [login(c, "bob", PASSWORD) for c in (ca, cb)],
        }
    report(
        "lockouts",
        during={k: v.name for k, v in during.items()},
        bob_failures_during=[c.name for c in bob],
        bob_on_other_replica=bob_on_a.name,
        after_redis_returned_empty={k: [c.name for c in v] for k, v in after.items()},
    )
    assert during == {"a": LOCKED, "b": LOCKED}
    assert bob == [grpc.StatusCode.UNAUTHENTICATED] * 5
    assert bob_on_a is LOCKED
    assert after == {"alice": [LOCKED, LOCKED], "bob": [LOCKED, LOCKED]}
