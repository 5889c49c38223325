"""RedisFanout against a real Redis: the cache, the widening script, pub/sub delivery,
resynchronisation on (re)connect, and a real outage of a redis-server we own."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from authority.domain.errors import Unavailable
from authority.domain.revocation import Revocation, RevocationKind
from authority.redis import fanout as fanout_module
from authority.redis.fanout import RedisFanout
from tests.processes import check_may_start

MakeFanout = Callable[..., Awaitable[RedisFanout]]


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true in time")
        await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """The callbacks of one ``listen``, recording what they were given, in order."""

    events: list[object] = field(default_factory=list)
    connections: int = 0
    during_connect: Callable[[], Awaitable[None]] | None = None

    def on_revocation(self, revocation: Revocation) -> None:
        self.events.append(revocation)

    async def on_key_ring_changed(self) -> None:
        self.events.append("key ring")

    async def on_connected(self) -> None:
        self.connections += 1
        self.events.append("connected")
        if self.during_connect is not None:
            await self.during_connect()

    @property
    def revocations(self) -> list[Revocation]:
        return [event for event in self.events if isinstance(event, Revocation)]


@asynccontextmanager
async def listening(fanout: RedisFanout, recorder: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``listen`` in a task until the block ends; wait for the first connection."""
    task = asyncio.create_task(
        fanout.listen(
            on_revocation=recorder.on_revocation,
            on_key_ring_changed=recorder.on_key_ring_changed,
            on_connected=recorder.on_connected,
        )
    )
    try:
        await eventually(lambda: recorder.connections >= 1 and fanout.healthy)
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def revocation(value: str = "alice", *, life: float = 60.0, age: float = 0.0) -> Revocation:
    now = time.time()
    return Revocation(RevocationKind.SUBJECT, value, now - age, now + life)


async def cached(
    raw_redis: Redis, fanout: RedisFanout, kind: RevocationKind, value: str
) -> dict[str, float] | None:
    raw = await raw_redis.get(fanout.cache_key(kind, value))
    return None if raw is None else json.loads(raw)


# -- publishing and listening ----------------------------------------------------------


async def test_a_published_revocation_reaches_a_listener_on_another_instance(
    make_fanout: MakeFanout,
) -> None:
    publisher, listener, recorder = await make_fanout(), await make_fanout(), Recorder()
    sent = Revocation(RevocationKind.SESSION, "sid:with:colons", 1_800_000_000.25, time.time() + 60)
    async with listening(listener, recorder):
        await publisher.publish_revocation(sent)
        await publisher.publish_key_ring_changed()
        await eventually(lambda: len(recorder.events) == 3)
    assert recorder.events == ["connected", sent, "key ring"]
    assert publisher.healthy and listener.healthy


async def test_on_connected_runs_before_any_message_is_delivered(
    make_fanout: MakeFanout,
) -> None:
    publisher, listener = await make_fanout(), await make_fanout()
    first = revocation("published-while-resyncing")

    async def publish_during_resync() -> None:
        await publisher.publish_revocation(first)
        await asyncio.sleep(0.2)  # the message is waiting on the socket meanwhile

    recorder = Recorder(during_connect=publish_during_resync)
    async with listening(listener, recorder):
        await eventually(lambda: len(recorder.events) == 2)
    assert recorder.events == ["connected", first]


async def test_malformed_messages_are_skipped(
    make_fanout: MakeFanout, raw_redis: Redis, prefix: str
) -> None:
    publisher, listener, recorder = await make_fanout(), await make_fanout(), Recorder()
    good = revocation()
    async with listening(listener, recorder):
        for junk in (
            b"not json",
            b"\xff\xfe\x00",
            b"[]",
            b"{}",
            json.dumps({"kind": "nope", "value": "x", "issued_before": 1, "expires_at": 2}),
            json.dumps({"kind": "sub", "value": "", "issued_before": 1, "expires_at": 2}),
            json.dumps({"kind": "sub", "value": 7, "issued_before": 1, "expires_at": 2}),
            json.dumps({"kind": "sub", "value": "x", "issued_before": "1", "expires_at": 2}),
            json.dumps({"kind": "sub", "value": "x", "issued_before": True, "expires_at": 2}),
            '{"kind": "sub", "value": "x", "issued_before": NaN, "expires_at": 2}',
        ):
            await raw_redis.publish(f"{prefix}:revocations", junk)
        await publisher.publish_revocation(good)
        await eventually(lambda: len(recorder.events) == 2)
        assert listener.healthy
    assert recorder.events == ["connected", good]


async def test_a_failing_callback_does_not_stop_the_listener(make_fanout: MakeFanout) -> None:
    publisher, listener = await make_fanout(), await make_fanout()
    received: list[Revocation] = []

    def on_revocation(revocation: Revocation) -> None:
        received.append(revocation)
        if len(received) == 1:
            raise RuntimeError("a bug in the caller")

    recorder = Recorder()
    recorder.on_revocation = on_revocation  # type: ignore[method-assign]
    async with listening(listener, recorder):
        await publisher.publish_revocation(revocation("one"))
        await publisher.publish_revocation(revocation("two"))
        await eventually(lambda: len(received) == 2)
    assert [r.value for r in received] == ["one", "two"]


async def test_a_failed_resync_is_retried_before_anything_is_delivered(
    make_fanout: MakeFanout,
) -> None:
    publisher, listener = await make_fanout(), await make_fanout()
    missed = revocation("published-while-the-resync-fails")

    async def fail_the_first_resync() -> None:
        if recorder.connections == 1:
            await publisher.publish_revocation(missed)
            raise Unavailable("the store is unavailable")

    recorder = Recorder(during_connect=fail_the_first_resync)
    async with listening(listener, recorder):
        assert recorder.connections == 2  # listening() waited for healthy
        after = revocation("after")
        await publisher.publish_revocation(after)
        await eventually(lambda: after in recorder.events)
    # The message sent during the failed resync was on the dropped subscription: the
    # caller learns of it from the successful resync (the cache and its store) instead.
    assert recorder.events == ["connected", "connected", after]
    assert missed in await publisher.live_revocations()


async def test_closing_the_fanout_ends_listen(make_fanout: MakeFanout) -> None:
    listener, recorder = await make_fanout(), Recorder()
    task = asyncio.create_task(
        listener.listen(
            on_revocation=recorder.on_revocation,
            on_key_ring_changed=recorder.on_key_ring_changed,
            on_connected=recorder.on_connected,
        )
    )
    await eventually(lambda: recorder.connections == 1)
    await listener.close()
    await asyncio.wait_for(task, timeout=3.0)
    assert not listener.healthy


# -- the cache -------------------------------------------------------------------------


async def test_the_ttl_is_the_remaining_life(make_fanout: MakeFanout, raw_redis: Redis) -> None:
    fanout = await make_fanout()
    sent = revocation(life=30.0)
    await fanout.publish_revocation(sent)
    key = fanout.cache_key(sent.kind, sent.value)
    assert await raw_redis.pttl(key) == pytest.approx(30_000, abs=1_000)
    assert json.loads(await raw_redis.get(key)) == {
        "issued_before": sent.issued_before,
        "expires_at": sent.expires_at,
    }


async def test_expired_revocations_are_not_cached(
    make_fanout: MakeFanout, raw_redis: Redis
) -> None:
    fanout = await make_fanout()
    gone = revocation("gone", life=-1.0, age=100.0)
    await fanout.publish_revocation(gone)
    assert await cached(raw_redis, fanout, gone.kind, gone.value) is None
    assert await fanout.live_revocations() == []


async def test_writes_widen_and_never_narrow(make_fanout: MakeFanout, raw_redis: Redis) -> None:
    fanout = await make_fanout()
    now = time.time()
    later = Revocation(RevocationKind.SUBJECT, "bob", now, now + 40)
    earlier = Revocation(RevocationKind.SUBJECT, "bob", now - 10, now + 90)
    await fanout.publish_revocation(later)
    await fanout.publish_revocation(earlier)
    assert await cached(raw_redis, fanout, later.kind, "bob") == {
        "issued_before": now,
        "expires_at": now + 90,
    }
    assert await raw_redis.pttl(fanout.cache_key(later.kind, "bob")) == pytest.approx(
        90_000, abs=1_000
    )


async def test_concurrent_replicas_end_with_the_latest_times(
    make_fanout: MakeFanout, raw_redis: Redis
) -> None:
    one, two = await make_fanout(), await make_fanout()
    now = time.time()
    for round_ in range(5):
        value = f"carol{round_}"
        writes = [
            (one if i % 2 else two).publish_revocation(
                Revocation(RevocationKind.SUBJECT, value, now + i * 0.001, now + 60 - i)
            )
            for i in range(20)
        ]
        await asyncio.gather(*writes)
        entry = await cached(raw_redis, one, RevocationKind.SUBJECT, value)
        assert entry == {"issued_before": now + 19 * 0.001, "expires_at": now + 60}


async def test_a_corrupt_cache_entry_is_overwritten_and_skipped(
    make_fanout: MakeFanout, raw_redis: Redis
) -> None:
    fanout = await make_fanout()
    bad_key = fanout.cache_key(RevocationKind.SUBJECT, "corrupt")
    await raw_redis.set(bad_key, b"{not json", px=60_000)
    await raw_redis.set(fanout.cache_key(RevocationKind.SUBJECT, "other"), b"[1]", px=60_000)
    assert await fanout.live_revocations() == []
    sent = revocation("corrupt")
    await fanout.publish_revocation(sent)
    assert await fanout.live_revocations() == [sent]


async def test_live_revocations_returns_everything_in_batches(make_fanout: MakeFanout) -> None:
    fanout = await make_fanout()
    now = time.time()
    sent = {
        Revocation(kind, f"v{i}:{kind.value}", now, now + 120)
        for i in range(650)
        for kind in (RevocationKind.TOKEN, RevocationKind.SUBJECT)
    } | {Revocation(RevocationKind.CLIENT, "svc:a", now, now + 120)}
    assert len(sent) > 1000
    for item in sent:
        await fanout.publish_revocation(item)
    assert set(await fanout.live_revocations()) == sent


async def test_a_prefix_with_glob_characters_matches_only_itself(
    redis_url: str, prefix: str
) -> None:
    plain = RedisFanout(redis_url, prefix=f"{prefix}:a1")
    glob = RedisFanout(redis_url, prefix=f"{prefix}:a?")
    await plain.start()
    await glob.start()
    try:
        await plain.publish_revocation(revocation("x"))
        assert await glob.live_revocations() == []
        assert len(await plain.live_revocations()) == 1
    finally:
        await plain.close()
        await glob.close()


# -- lifecycle and failures -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_is_unavailable_and_names_no_secret() -> None:
    port = _free_port()
    fanout = RedisFanout(f"redis://:hunter2@127.0.0.1:{port}/0", socket_timeout=1.0)
    with pytest.raises(Unavailable):  # not started
        await fanout.live_revocations()
    await fanout.start()  # no I/O: does not raise
    assert fanout.healthy  # nothing has failed yet
    for call in (
        fanout.publish_revocation(revocation()),
        fanout.publish_key_ring_changed(),
        fanout.live_revocations(),
    ):
        with pytest.raises(Unavailable) as caught:
            await call
        assert caught.value.message.startswith("Redis is unavailable: ")
        assert "hunter2" not in caught.value.message
        assert str(port) not in caught.value.message
        assert not fanout.healthy
    await fanout.close()
    await fanout.close()


class RedisServer:
    """A redis-server process of this test's own, on a fixed port, stopped and started at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        check_may_start("a redis-server of its own")
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def own_redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_a_real_outage_is_reported_and_recovered_from() -> None:
    with own_redis_server() as server:
        listener = RedisFanout(server.url, prefix="outage", socket_timeout=1.0)
        publisher = RedisFanout(server.url, prefix="outage", socket_timeout=1.0)
        await listener.start()
        await publisher.start()
        recorder = Recorder()
        try:
            async with listening(listener, recorder):
                before = revocation("before")
                await publisher.publish_revocation(before)
                await eventually(lambda: before in recorder.events)
                dropped = asyncio.create_task(listener.dropped())
                await asyncio.sleep(0.1)
                assert not dropped.done()  # healthy: a poll waiting on it sleeps on

                server.stop()
                # The listener's own connection failing wakes whoever waits, at once.
                await asyncio.wait_for(dropped, timeout=3.0)
                assert not listener.healthy
                await asyncio.wait_for(listener.dropped(), timeout=0.1)  # down: no wait
                started = time.monotonic()
                with pytest.raises(Unavailable):
                    await publisher.publish_revocation(revocation("lost"))
                assert time.monotonic() - started < 1.0 + 0.5
                assert not publisher.healthy

                server.start()
                await eventually(lambda: recorder.connections == 2 and listener.healthy, 10.0)
                after = revocation("after")
                await publisher.publish_revocation(after)
                assert publisher.healthy
                await eventually(lambda: after in recorder.events)
                # The cache was empty after the restart (no persistence): resync saw nothing.
                assert await publisher.live_revocations() == [after]
            assert recorder.events == ["connected", before, "connected", after]
        finally:
            await listener.close()
            await publisher.close()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_a_silent_redis_is_detected_by_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped (SIGSTOP) server keeps its sockets open and never answers: only the
    subscription's PING and the command timeouts can notice."""
    monkeypatch.setattr(fanout_module, "_PING_AFTER_IDLE", 0.3)
    with own_redis_server() as server:
        assert server.process is not None
        listener = RedisFanout(server.url, prefix="silent", socket_timeout=0.5)
        publisher = RedisFanout(server.url, prefix="silent", socket_timeout=0.5)
        await listener.start()
        await publisher.start()
        recorder = Recorder()
        try:
            async with listening(listener, recorder):
                server.process.send_signal(signal.SIGSTOP)
                try:
                    await eventually(lambda: not listener.healthy, within=3.0)
                    started = time.monotonic()
                    with pytest.raises(Unavailable, match="timed out"):
                        await publisher.publish_key_ring_changed()
                    assert time.monotonic() - started < 0.5 + 0.5
                finally:
                    server.process.send_signal(signal.SIGCONT)
                await eventually(lambda: recorder.connections >= 2 and listener.healthy, 10.0)
                await publisher.publish_key_ring_changed()
                await eventually(lambda: recorder.events[-1] == "key ring")
        finally:
            await listener.close()
            await publisher.close()
