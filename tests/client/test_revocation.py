"""Revocation clients against an in-test grpc.aio RevocationService (a fake of the remote
service, scripted per test): batching, the negative cache, fail-closed/open, and the
watch state machine (snapshot chunks, deltas, heartbeats, expiry, staleness, resume)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from authority_client.jwks import StaticJwksSource
from authority_client.revocation import MAX_BATCH, CallbackRevocations, WatchedRevocations
from authority_client.verifier import Claims, LocalVerifier

from authority.api.revocation_service import MAX_CHECK_TOKENS
from authority.v1 import revocation_pb2
from authority.v1 import token_pb2 as pb
from tests.client.support import (
    ISSUER,
    FakeClock,
    FakeRevocationService,
    SigningKey,
    claims,
    event,
    jwks_document,
    revocation,
    serve,
)

TOKEN = revocation_pb2.REVOCATION_KIND_TOKEN
SESSION = revocation_pb2.REVOCATION_KIND_SESSION
SUBJECT = revocation_pb2.REVOCATION_KIND_SUBJECT
CLIENT = revocation_pb2.REVOCATION_KIND_CLIENT


def identity(
    jti: str = "j1", *, sid: str = "s1", sub: str = "p_1", iat: int | None = None
) -> Claims:
    now = int(time.time())
    return Claims(
        issuer=ISSUER,
        subject=sub,
        audience=("orders",),
        expires_at=now + 600,
        issued_at=now - 10 if iat is None else iat,
        not_before=now - 10,
        token_id=jti,
        session_id=sid,
        client_id="web",
        scope=(),
        key_id="k",
    )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRevocationService, str, grpc.aio.Server]]:
    service = FakeRevocationService()
    server, target = await serve(service)
    yield service, target, server
    await server.stop(None)


Fake = tuple[FakeRevocationService, str, grpc.aio.Server]


# -- callback ---------------------------------------------------------------------------


async def test_concurrent_checks_share_one_rpc(fake: Fake) -> None:
    service, target, _ = fake
    service.revoked = {"j3", "j7"}
    checker = CallbackRevocations(target, batch_window=0.005)
    try:
        statuses = await asyncio.gather(*(checker.check(identity(f"j{i}")) for i in range(50)))
        assert len(service.check_requests) == 1
        assert len(service.check_requests[0].tokens) == 50
        assert [i for i, s in enumerate(statuses) if s.revoked] == [3, 7]
        assert all(s.known for s in statuses)
        # The identity is what the contract asks for.
        sent = service.check_requests[0].tokens[0]
        assert (sent.token_id, sent.session_id, sent.subject, sent.client_id) == (
            "j0",
            "s1",
            "p_1",
            "web",
        )
        assert sent.issued_at.seconds > 0
    finally:
        await checker.aclose()


def test_a_batch_larger_than_the_contract_allows_is_refused_at_construction() -> None:
    # The authority refuses a CheckRevocations of more than 500 tokens whole, so a larger
    # max_batch would make every full batch fail closed: refused up front, not capped
    # (a cap would silently run a configuration other than the one written).
    assert MAX_BATCH == MAX_CHECK_TOKENS == 500
    with pytest.raises(ValueError, match="between 1 and 500"):
        CallbackRevocations("127.0.0.1:1", max_batch=501)
    assert CallbackRevocations("127.0.0.1:1", max_batch=500).max_batch == 500


async def test_a_full_batch_goes_at_once_and_duplicates_are_asked_once(fake: Fake) -> None:
    service, target, _ = fake
    checker = CallbackRevocations(target, batch_window=1.0, max_batch=4)
    try:
        started = time.monotonic()
        first = await asyncio.gather(*(checker.check(identity(f"j{i % 4}")) for i in range(8)))
        assert time.monotonic() - started < 0.9  # full at once: no waiting for the window
        assert not any(s.revoked for s in first)
        await asyncio.gather(*(checker.check(identity(f"j{i % 10}")) for i in range(20)))
        # j0..j3 were cached; j4..j9 are asked once each, in batches of at most four.
        assert [len(r.tokens) for r in service.check_requests] == [4, 4, 2]
    finally:
        await checker.aclose()


async def test_negative_answers_are_cached_for_the_ttl(fake: Fake) -> None:
    service, target, _ = fake
    clock = FakeClock()
    checker = CallbackRevocations(target, negative_ttl=1.0, clock=clock)
    try:
        assert not (await checker.check(identity("j1"))).revoked
        service.revoked.add("j1")
        assert not (await checker.check(identity("j1"))).revoked  # cached
        assert len(service.check_requests) == 1
        clock.advance(1.01)
        assert (await checker.check(identity("j1"))).revoked
        assert len(service.check_requests) == 2
        clock.advance(100)
        assert (await checker.check(identity("j1"))).revoked  # revoked stays revoked
        assert len(service.check_requests) == 2
    finally:
        await checker.aclose()


async def test_fail_closed_by_default_and_errors_are_not_cached(fake: Fake) -> None:
    service, target, _ = fake
    service.check_error = grpc.StatusCode.UNAVAILABLE
    checker = CallbackRevocations(target)
    try:
        status = await checker.check(identity())
        assert status.revoked and not status.known
        assert "revocation state is unknown" in status.detail
        # UNAVAILABLE is retried by the library's channel policy (authority_client.channels):
        # five attempts, then the failure is the answer.
        assert len(service.check_requests) == 5
        service.check_error = None
        assert not (await checker.check(identity())).revoked
        assert len(service.check_requests) == 6
    finally:
        await checker.aclose()


async def test_fail_open_when_configured(fake: Fake) -> None:
    service, target, _ = fake
    service.check_error = grpc.StatusCode.INTERNAL
    checker = CallbackRevocations(target, fail_open=True)
    try:
        status = await checker.check(identity())
        assert not status.revoked and not status.known
    finally:
        await checker.aclose()


async def test_an_unreachable_authority_fails_closed_within_the_timeout() -> None:
    checker = CallbackRevocations("127.0.0.1:9", timeout=0.5)
    started = time.monotonic()
    try:
        status = await checker.check(identity())
    finally:
        await checker.aclose()
    assert status.revoked and not status.known
    assert time.monotonic() - started < 2


async def test_the_verifier_reports_unknown_revocation_state_as_revoked(fake: Fake) -> None:
    service, target, _ = fake
    key = SigningKey.generate("EdDSA")
    verifier = LocalVerifier(
        StaticJwksSource(jwks_document(key)),
        issuer=ISSUER,
        audience="orders",
        revocations=CallbackRevocations(target),
    )
    try:
        token = key.sign(claims(jti="jX"))
        assert (await verifier.verify(token)).valid
        service.revoked.add("jX")
        await asyncio.sleep(1.05)  # the negative TTL
        verdict = await verifier.verify(token)
        assert verdict.reason == pb.VERIFY_RESULT_REVOKED
        assert verdict.detail == "the token has been revoked"
        service.check_error = grpc.StatusCode.UNAVAILABLE
        other = await verifier.verify(key.sign(claims(jti="jY")))
        assert other.reason == pb.VERIFY_RESULT_REVOKED
        assert "unknown" in other.detail
    finally:
        await verifier.aclose()


# -- watch -------------------------------------------------------------------------------

Watch = Callable[
    [revocation_pb2.WatchRevocationsRequest, grpc.aio.ServicerContext[Any, Any]],
    AsyncIterator[revocation_pb2.WatchRevocationsResponse],
]


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_snapshot_chunks_deltas_and_heartbeats(fake: Fake) -> None:
    service, target, _ = fake
    gate = asyncio.Event()
    more = asyncio.Event()

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        yield event(snapshot=[revocation(TOKEN, "j1")], complete=False, resume="c1")
        await gate.wait()
        yield event(snapshot=[revocation(SESSION, "s9")], complete=True, resume="r1")
        await more.wait()
        yield event(delta=revocation(TOKEN, "j2"), resume="r2")
        while True:
            await asyncio.sleep(0.05)
            yield event(heartbeat=True, resume="r3")

    service.watch_script = script
    watched = WatchedRevocations(target, max_staleness=1.0)
    try:
        await watched.start()
        await _until(lambda: watched.connects == 1 and watched.staleness < 1)
        # Half a snapshot: not a view yet, so fail closed.
        status = await watched.check(identity("j1"))
        assert status.revoked and not status.known and "no revocation snapshot" in status.detail
        assert watched.resume_token == ""  # not past a snapshot we did not finish
        gate.set()
        async with asyncio.timeout(5):
            await watched.wait_synced()
        assert (await watched.check(identity("j1"))).revoked
        assert (await watched.check(identity("j5", sid="s9"))).revoked
        assert not (await watched.check(identity("j2", sid="s2"))).revoked
        assert watched.resume_token == "r1"
        more.set()
        await _until(lambda: watched.resume_token == "r3")
        assert (await watched.check(identity("j2", sid="s2"))).revoked
        assert watched.heartbeat_interval == 1.0
        assert watched.fresh
    finally:
        await watched.aclose()


async def test_a_new_snapshot_replaces_the_view_and_entries_expire(fake: Fake) -> None:
    service, target, _ = fake
    wall = FakeClock(time.time())
    second = asyncio.Event()

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        yield event(
            snapshot=[revocation(TOKEN, "j1"), revocation(TOKEN, "j2", expires_in=60)],
            resume="r1",
        )
        await second.wait()
        yield event(snapshot=[revocation(TOKEN, "j2", expires_in=60)], resume="r2")
        while True:
            await asyncio.sleep(0.05)
            yield event(heartbeat=True)

    service.watch_script = script
    watched = WatchedRevocations(target, wall_clock=wall)
    try:
        async with asyncio.timeout(5):
            await watched.wait_synced()
        assert (await watched.check(identity("j1"))).revoked
        second.set()
        await _until(lambda: watched.snapshots == 2)
        assert not (await watched.check(identity("j1"))).revoked  # not in the new view
        assert (await watched.check(identity("j2"))).revoked
        wall.advance(61)  # every token j2 covers has expired: the entry goes
        assert not (await watched.check(identity("j2"))).revoked
        assert len(watched.view) == 0
    finally:
        await watched.aclose()


async def test_subject_and_client_revocations_cover_tokens_issued_before(fake: Fake) -> None:
    service, target, _ = fake
    cutoff = time.time() - 100

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        yield event(
            snapshot=[
                revocation(SUBJECT, "p_bob", issued_before=cutoff),
                revocation(CLIENT, "web", issued_before=cutoff - 1000),
            ]
        )
        await asyncio.Event().wait()

    service.watch_script = script
    watched = WatchedRevocations(target)
    try:
        async with asyncio.timeout(5):
            await watched.wait_synced()
        assert (await watched.check(identity(sub="p_bob", iat=int(cutoff) - 1))).revoked
        assert (await watched.check(identity(sub="p_bob", iat=int(cutoff)))).revoked  # at: yes
        assert not (await watched.check(identity(sub="p_bob", iat=int(cutoff) + 1))).revoked
        assert (await watched.check(identity(sub="p_amy", iat=int(cutoff) - 2000))).revoked
        assert not (await watched.check(identity(sub="p_amy", iat=int(cutoff)))).revoked
    finally:
        await watched.aclose()


async def test_a_silent_stream_fails_closed_then_falls_back(fake: Fake) -> None:
    service, target, _ = fake

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        if len(service.watch_requests) == 1:
            yield event(snapshot=[], resume="r1", heartbeat_interval=0.1)
        await asyncio.Event().wait()  # then nothing, not even heartbeats

    service.watch_script = script
    watched = WatchedRevocations(target, max_staleness=0.3)
    try:
        async with asyncio.timeout(5):
            await watched.wait_synced()
        assert not (await watched.check(identity())).revoked
        await asyncio.sleep(0.4)
        status = await watched.check(identity())
        assert status.revoked and not status.known and "silent" in status.detail
        # It also gave up on the silent stream and reconnected, resuming.
        await _until(lambda: len(service.watch_requests) >= 2)
        assert service.watch_requests[1].resume_token == "r1"
    finally:
        await watched.aclose()

    service.revoked = {"j1"}
    service.watch_requests.clear()
    fallback = CallbackRevocations(target)
    watched = WatchedRevocations(target, max_staleness=0.3, fallback=fallback)
    try:
        async with asyncio.timeout(5):
            await watched.wait_synced()
        await asyncio.sleep(0.4)
        assert (await watched.check(identity("j1"))).revoked
        assert (await watched.check(identity("j1"))).known  # the authority answered
        assert fallback.rpcs >= 1
    finally:
        await watched.aclose()


async def test_reconnects_with_backoff_and_resumes(fake: Fake) -> None:
    service, target, _ = fake

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        call = len(service.watch_requests)
        if call == 1:
            yield event(snapshot=[revocation(TOKEN, "j1")], resume="r1")
            yield event(delta=revocation(TOKEN, "j2"), resume="r2")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        elif call <= 3:
            # Broken mid-snapshot: that chunk's token must not be resumed from.
            yield event(snapshot=[], complete=False, resume=f"half{call}")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away again")
        else:
            yield event(delta=revocation(TOKEN, "j3"), resume="r3")
            while True:
                await asyncio.sleep(0.05)
                yield event(heartbeat=True, resume="r4")

    service.watch_script = script
    watched = WatchedRevocations(target, backoff_initial=0.02, backoff_max=0.1)
    try:
        await watched.start()
        await _until(lambda: watched.resume_token == "r4")
        tokens = [r.resume_token for r in service.watch_requests]
        assert tokens == ["", "r2", "r2", "r2"]
        for jti in ("j1", "j2", "j3"):
            assert (await watched.check(identity(jti))).revoked
        assert watched.fresh
    finally:
        await watched.aclose()


async def test_backoff_bounds_reconnect_attempts_to_a_dead_authority(fake: Fake) -> None:
    service, target, _ = fake

    async def script(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        yield event(heartbeat=True)

    service.watch_script = script
    watched = WatchedRevocations(target, backoff_initial=0.05, backoff_max=0.4)
    try:
        await watched.start()
        await asyncio.sleep(1.0)
        # 0.05, 0.1, 0.2, 0.4, 0.4 ... (each times 0.5 to 1 jitter): a handful, not a storm.
        assert 2 <= watched.connects <= 12
        status = await watched.check(identity())
        assert status.revoked and not status.known
    finally:
        await watched.aclose()
