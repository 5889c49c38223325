"""RevocationService against a real server process: CheckRevocations answers from the view;
WatchRevocations gives a snapshot or exactly the missed changes, then live ones within
milliseconds, heartbeats in the gaps, across replicas, and never holds up a shutdown."""

from __future__ import annotations

import itertools
import math
import queue
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authority.api.revocation_service import SNAPSHOT_CHUNK_BYTES
from authority.v1 import revocation_pb2, revocation_pb2_grpc, token_pb2
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

SERVICE = "authority.v1.RevocationService"
HEARTBEAT = 0.2
PASSWORD = "correct horse battery staple"
Response = revocation_pb2.WatchRevocationsResponse
# Reading revocations needs a credential (tests/adversarial/test_read_access.py covers who
# may read); the admin credential is one.
READER = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


class Watch:
    """A WatchRevocations stream read on a thread, each message with its arrival time."""

    def __init__(self, server: ServerProcess, resume_token: str = "") -> None:
        self.channel = server.channel()
        stub = revocation_pb2_grpc.RevocationServiceStub(self.channel)
        self.call = stub.WatchRevocations(
            revocation_pb2.WatchRevocationsRequest(resume_token=resume_token), metadata=READER
        )
        self._messages: queue.Queue[tuple[float, Response]] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self._messages.put((time.monotonic(), message))
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.ended.set()

    def next(self, timeout: float = 5.0) -> tuple[float, Response]:
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s (error: {self.error})") from None

    def next_change(self, timeout: float = 5.0) -> tuple[float, Response]:
        """The next message that is not a heartbeat."""
        deadline = time.monotonic() + timeout
        while True:
            arrived, message = self.next(max(0.0, deadline - time.monotonic()))
            if message.WhichOneof("event") != "heartbeat":
                return arrived, message

    def snapshot(self) -> tuple[list[revocation_pb2.Snapshot], str]:
        """The snapshot's chunks (it must come first) and the resume token after it."""
        chunks: list[revocation_pb2.Snapshot] = []
        while not chunks or not chunks[-1].complete:
            _, message = self.next()
            assert message.WhichOneof("event") == "snapshot", message
            chunks.append(message.snapshot)
            token = message.resume_token
        return chunks, token

    def quiet(self, seconds: float) -> list[Response]:
        """Every message of the next ``seconds``."""
        deadline = time.monotonic() + seconds
        messages = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                messages.append(self._messages.get(timeout=left)[1])
            except queue.Empty:
                break
        return messages

    def close(self) -> None:
        self.call.cancel()
        self.ended.wait(5)
        self.channel.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def values(chunks: list[revocation_pb2.Snapshot]) -> set[str]:
    return {r.value for chunk in chunks for r in chunk.revocations}


def seq_of(token: str) -> int:
    return int(token.rpartition(":")[2])


def epoch_of(token: str) -> str:
    return token.rpartition(":")[0]


def seconds(instant: Timestamp) -> float:
    return instant.seconds + instant.nanos / 1e9


def check(server: ServerProcess, *tokens: revocation_pb2.TokenIdentity) -> list[bool]:
    with server.channel() as channel:
        stub = revocation_pb2_grpc.RevocationServiceStub(channel)
        request = revocation_pb2.CheckRevocationsRequest(tokens=list(tokens))
        return list(stub.CheckRevocations(request, timeout=10, metadata=READER).revoked)


def revoke(server: ServerProcess, **target: str) -> float:
    """Revoke as the admin; returns the revocation instant (epoch seconds)."""
    with server.client() as client:
        return seconds(client.revoke(**target).revoked_at)


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(AUTHORITY_WATCH_HEARTBEAT=f"{int(HEARTBEAT * 1000)}ms")


# --- registration ---------------------------------------------------------------------


def test_the_service_is_in_health_and_reflection(server: ServerProcess) -> None:
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
        assert SERVICE in {s.name for s in response.list_services_response.service}


# --- CheckRevocations -----------------------------------------------------------------


def test_check_answers_each_kind_in_the_order_asked(server: ServerProcess) -> None:
    revoke(server, token_id="jti-revoked")
    revoke(server, session_id="sid-revoked")
    subject_at = revoke(server, subject="sub-revoked")
    client_at = revoke(server, client_id="cli-revoked")
    identity = revocation_pb2.TokenIdentity

    def at(instant: float) -> Timestamp:
        return Timestamp(seconds=math.floor(instant))  # `iat` is whole seconds

    asked = [
        (identity(token_id="jti-revoked", subject="p"), True),
        (identity(token_id="jti-other", subject="p"), False),
        (identity(token_id="j", session_id="sid-revoked", subject="p"), True),
        (identity(token_id="j", session_id="sid-other", subject="p"), False),
        # Subject and client revocations are not-before times: earlier tokens only.
        (identity(token_id="j", subject="sub-revoked", issued_at=at(subject_at - 60)), True),
        (identity(token_id="j", subject="sub-revoked", issued_at=at(subject_at)), True),
        (identity(token_id="j", subject="sub-revoked", issued_at=at(subject_at + 60)), False),
        (
            identity(token_id="j", subject="p", client_id="cli-revoked", issued_at=at(client_at)),
            True,
        ),
        (
            identity(
                token_id="j", subject="p", client_id="cli-revoked", issued_at=at(client_at + 5)
            ),
            False,
        ),
        (identity(token_id="j", subject="sub-other", issued_at=at(subject_at - 60)), False),
        (identity(), False),  # nothing to match
        (identity(token_id="j", subject="sub-revoked"), True),  # no iat: counts as the epoch
    ]
    before = time.time()
    with server.channel() as channel:
        stub = revocation_pb2_grpc.RevocationServiceStub(channel)
        answer = stub.CheckRevocations(
            revocation_pb2.CheckRevocationsRequest(tokens=[token for token, _ in asked]),
            timeout=10,
            metadata=READER,
        )
    assert list(answer.revoked) == [expected for _, expected in asked]
    assert before - 1 <= seconds(answer.as_of) <= time.time() + 1


def test_check_sees_a_revoked_access_token_at_once(server: ServerProcess) -> None:
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        token = client.issue_with_password("alice", PASSWORD).access_token
        claims = client.verify(token).claims
    identity = revocation_pb2.TokenIdentity(
        token_id=claims.token_id,
        session_id=claims.session_id,
        subject=claims.subject,
        client_id=claims.client_id,
        issued_at=claims.issued_at,
    )
    assert check(server, identity) == [False]
    with server.client() as client:
        client.revoke(access_token=token)
        assert client.verify(token).result == token_pb2.VERIFY_RESULT_REVOKED
    assert check(server, identity) == [True]


def test_check_takes_at_most_five_hundred_tokens(server: ServerProcess) -> None:
    revoke(server, token_id="j7")
    # Realistic identities (22-character jti, sid, p_ subject, client id, iat): a full
    # batch fits the 64 KiB message limit.
    batch = [
        revocation_pb2.TokenIdentity(
            token_id=f"j{i}" if i == 7 else f"{i:022d}",
            session_id="s_" + "S" * 22,
            subject="p_" + "0" * 24,
            client_id="c" * 20,
            issued_at=Timestamp(seconds=int(time.time()) - 60),
        )
        for i in range(500)
    ]
    answer = check(server, *batch)
    assert len(answer) == 500
    assert [i for i, revoked in enumerate(answer) if revoked] == [7]
    assert check(server) == []
    with pytest.raises(grpc.RpcError) as caught:
        check(server, *batch, revocation_pb2.TokenIdentity(token_id="j500"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "at most 500" in caught.value.details()  # type: ignore[attr-defined]


# --- WatchRevocations -----------------------------------------------------------------


def test_watch_starts_with_a_snapshot_then_streams_each_revocation(server: ServerProcess) -> None:
    revoke(server, token_id="before-1")
    revoke(server, subject="before-2")
    with Watch(server) as watch:
        chunks, token = watch.snapshot()
        assert len(chunks) == 1
        assert values(chunks) == {"before-1", "before-2"}
        kinds = {r.value: r.kind for r in chunks[0].revocations}
        assert kinds == {
            "before-1": revocation_pb2.REVOCATION_KIND_TOKEN,
            "before-2": revocation_pb2.REVOCATION_KIND_SUBJECT,
        }
        assert seq_of(token) == 2
        started = time.monotonic()
        revoked_at = revoke(server, session_id="live-1")
        arrived, message = watch.next_change()
        assert arrived - started < 1.0
        assert message.WhichOneof("event") == "revocation"
        delta = message.revocation
        assert (delta.kind, delta.value) == (revocation_pb2.REVOCATION_KIND_SESSION, "live-1")
        # A session revocation covers every token of the session, whatever its iat: its
        # issued_before is its end of life.
        assert seconds(delta.issued_before) == seconds(delta.expires_at)
        assert seconds(delta.expires_at) > revoked_at
        assert message.resume_token == f"{epoch_of(token)}:3"
        assert message.heartbeat_interval.ToMilliseconds() == HEARTBEAT * 1000


def test_heartbeats_come_at_the_configured_interval(server: ServerProcess) -> None:
    with Watch(server) as watch:
        _, token = watch.snapshot()
        arrivals = []
        for _ in range(8):
            arrived, message = watch.next(2)
            assert message.WhichOneof("event") == "heartbeat"
            assert message.resume_token == token  # nothing new: the same position
            assert message.heartbeat_interval.ToMilliseconds() == 200
            assert abs(seconds(message.heartbeat.sent_at) - time.time()) < 1
            arrivals.append(arrived)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert 0.15 < statistics.median(gaps) < 0.3, gaps
    assert max(gaps) < 0.6, gaps


def test_heartbeats_wait_for_a_quiet_interval(server: ServerProcess) -> None:
    """A heartbeat says nothing else was sent: a busy stream needs none."""
    with Watch(server) as watch:
        watch.snapshot()
        for i in range(6):
            revoke(server, token_id=f"busy-{i}")
            time.sleep(HEARTBEAT / 4)
        events = [m.WhichOneof("event") for m in watch.quiet(HEARTBEAT * 1.5)]
    assert events[:6] == ["revocation"] * 6
    assert events[6:7] == ["heartbeat"]


def test_resuming_gets_exactly_the_missed_revocations_without_a_snapshot(
    server: ServerProcess,
) -> None:
    revoke(server, token_id="seen")
    with Watch(server) as watch:
        _, token = watch.snapshot()
    missed = [f"missed-{i}" for i in range(3)]
    for value in missed:
        revoke(server, token_id=value)
    with Watch(server, token) as watch:
        messages = [watch.next()[1] for _ in range(3)]
        assert [m.WhichOneof("event") for m in messages] == ["revocation"] * 3
        assert [m.revocation.value for m in messages] == missed
        assert [seq_of(m.resume_token) for m in messages] == [2, 3, 4]
        _, after = watch.next(2)
        assert after.WhichOneof("event") == "heartbeat"  # nothing else, and no snapshot
        last = messages[-1].resume_token
    # Up to date already: only heartbeats.
    with Watch(server, last) as watch:
        _, message = watch.next(2)
        assert message.WhichOneof("event") == "heartbeat"
        assert message.resume_token == last


@pytest.mark.parametrize(
    "resume_token",
    ["bogus", "0123456789abcdef:1", "{epoch}:999999", "{epoch}:1-partial", "{epoch}:"],
)
def test_a_token_that_cannot_be_resumed_gets_a_snapshot(
    server: ServerProcess, resume_token: str
) -> None:
    revoke(server, token_id="kept")
    with Watch(server) as watch:
        _, token = watch.snapshot()
    with Watch(server, resume_token.replace("{epoch}", epoch_of(token))) as watch:
        chunks, again = watch.snapshot()
        assert values(chunks) == {"kept"}
        assert again == token


def test_a_large_snapshot_comes_in_chunks_and_only_the_whole_resumes(
    server: ServerProcess,
) -> None:
    count = 1_100
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: revoke(server, token_id=f"bulk-{i}"), range(count)))
    with Watch(server) as watch:
        chunks, token = watch.snapshot()
    # Cut by size (SNAPSHOT_CHUNK_BYTES), not by count: no message can outgrow the limit.
    assert len(chunks) >= 2
    assert all(c.ByteSize() <= SNAPSHOT_CHUNK_BYTES + 1024 for c in chunks)
    assert [c.complete for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert values(chunks) == {f"bulk-{i}" for i in range(count)}
    # Resuming after part of a snapshot would leave a follower's view incomplete.
    with Watch(server) as watch:
        _, first = watch.next()
        assert not first.snapshot.complete
        partial = first.resume_token
    with Watch(server, partial) as watch:
        _, message = watch.next()
        assert message.WhichOneof("event") == "snapshot"
    with Watch(server, token) as watch:
        _, message = watch.next(2)
        assert message.WhichOneof("event") == "heartbeat"


def test_after_a_restart_the_new_epoch_means_a_snapshot(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = {"AUTHORITY_WATCH_HEARTBEAT": "200ms"}
    first = start_server(tmp_path / "data", **env)
    revoke(first, token_id="durable")
    with Watch(first) as watch:
        _, token = watch.snapshot()
    assert first.terminate() == 0
    second = start_server(tmp_path / "data", **env)
    with Watch(second, token) as watch:
        chunks, again = watch.snapshot()
    assert values(chunks) == {"durable"}  # loaded from the store
    assert epoch_of(again) != epoch_of(token)


def test_a_cancelled_watch_ends_on_the_server(server: ServerProcess) -> None:
    with Watch(server) as watch:
        watch.snapshot()
    deadline = time.monotonic() + 5
    while not any(e.get("event") == "revocation.watch_ended" for e in server.events()):
        assert time.monotonic() < deadline, "the server never ended the stream"
        time.sleep(0.02)
    ended = [e for e in server.events() if e.get("event") == "revocation.watch_ended"]
    assert [e["outcome"] for e in ended] == ["cancelled"]


def test_sigterm_with_open_watches_stops_promptly(
    start_server: Callable[..., ServerProcess],
) -> None:
    grace = 10.0
    server = start_server(AUTHORITY_SHUTDOWN_GRACE=f"{grace:g}s")
    with ExitStack() as stack:
        watches = [stack.enter_context(Watch(server)) for _ in range(3)]
        for watch in watches:
            watch.snapshot()
        started = time.monotonic()
        assert server.terminate(timeout=grace + 5) == 0
        took = time.monotonic() - started
        for watch in watches:
            assert watch.ended.wait(2)
            assert watch.error is not None
            assert watch.error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert "shutting down" in watch.error.details()  # type: ignore[attr-defined]
    # Open streams end at once instead of holding the stop for the grace period.
    assert took < 3, took
    outcomes = [e["outcome"] for e in server.events() if e["event"] == "revocation.watch_ended"]
    assert outcomes == ["closed"] * 3


# --- replicas -------------------------------------------------------------------------


@pytest.fixture
def two_replicas(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two replicas on one PostgreSQL database and one Redis, polling often."""
    env = {
        "AUTHORITY_REDIS_URL": services.redis_url(),
        "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
        "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
        "AUTHORITY_WATCH_HEARTBEAT": "200ms",
        "AUTHORITY_REVOCATION_POLL": "100ms",
    }
    with services.fresh_database() as url:
        env["AUTHORITY_DATABASE_URL"] = url
        first = start_server(tmp_path / "a", **env)
        second = start_server(tmp_path / "b", **env)
        yield first, second
        for server in (first, second):
            server.kill()


def test_a_revocation_on_one_replica_reaches_a_watcher_of_another(
    two_replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = two_replicas
    with Watch(second) as watch:
        watch.snapshot()
        started = time.monotonic()
        revoke(first, session_id="elsewhere")
        arrived, message = watch.next_change()
        assert arrived - started < 1.0
        assert message.revocation.value == "elsewhere"
        # The store poll (every 0.5 s while Redis is up) finds it again: not re-sent.
        later = watch.quiet(1.5)
    assert {m.WhichOneof("event") for m in later} == {"heartbeat"}
    identity = revocation_pb2.TokenIdentity(token_id="j", session_id="elsewhere")
    assert check(second, identity) == [True]
