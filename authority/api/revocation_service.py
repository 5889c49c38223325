"""authority.v1.RevocationService: what is revoked, for services that verify tokens locally.

Both RPCs answer from this process's in-memory view (never the database), so they
cost what Verify costs. WatchRevocations follows the view through the
RevocationFeed: a snapshot or the missed changes, then live ones, and a heartbeat
whenever nothing else went out for the interval, so a follower can tell how fresh
it is. Streams end with a status a follower reconnects on: UNAVAILABLE when the
server shuts down, RESOURCE_EXHAUSTED when the follower fell too far behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from authority.api.convert import duration, instant, timestamp
from authority.api.errors import rpc
from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.services.revocation_feed import (
    FeedEnded,
    RevocationFeed,
    SubscriberLagged,
    Subscription,
)
from authority.v1 import revocation_pb2, revocation_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
Response = revocation_pb2.WatchRevocationsResponse

MAX_CHECK_TOKENS = 500  # a full batch of real identities fits the 64 KiB message limit
SNAPSHOT_CHUNK = 500

log = structlog.get_logger(__name__)

KIND_TO_PB: dict[RevocationKind, revocation_pb2.RevocationKind.ValueType] = {
    RevocationKind.TOKEN: revocation_pb2.REVOCATION_KIND_TOKEN,
    RevocationKind.SESSION: revocation_pb2.REVOCATION_KIND_SESSION,
    RevocationKind.SUBJECT: revocation_pb2.REVOCATION_KIND_SUBJECT,
    RevocationKind.CLIENT: revocation_pb2.REVOCATION_KIND_CLIENT,
}


def seconds_of(message: Timestamp) -> float:
    return message.seconds + message.nanos / 1e9


def revocation_message(revocation: Revocation) -> revocation_pb2.Revocation:
    return revocation_pb2.Revocation(
        kind=KIND_TO_PB[revocation.kind],
        value=revocation.value,
        issued_before=instant(revocation.issued_before),
        expires_at=instant(revocation.expires_at),
    )


class RevocationServicer(revocation_pb2_grpc.RevocationServiceServicer):
    def __init__(
        self,
        *,
        view: RevocationSet,
        feed: RevocationFeed,
        clock: Clock,
        heartbeat: timedelta,
    ) -> None:
        self._view = view
        self._feed = feed
        self._clock = clock
        self._heartbeat = heartbeat.total_seconds()
        self._heartbeat_interval = duration(heartbeat)

    @rpc
    async def CheckRevocations(
        self, request: revocation_pb2.CheckRevocationsRequest, context: Context
    ) -> revocation_pb2.CheckRevocationsResponse:
        """A token without ``issued_at`` counts as issued at the epoch: any subject or client
        revocation covers it (when in doubt, revoked)."""
        if len(request.tokens) > MAX_CHECK_TOKENS:
            raise InvalidArgument(
                f"at most {MAX_CHECK_TOKENS} tokens per request ({len(request.tokens)} given)"
            )
        is_revoked = self._view.is_revoked_identity
        revoked = [
            is_revoked(
                token.token_id,
                token.session_id,
                token.subject,
                token.client_id,
                seconds_of(token.issued_at),
            )
            for token in request.tokens
        ]
        return revocation_pb2.CheckRevocationsResponse(
            revoked=revoked, as_of=timestamp(self._clock.now())
        )

    async def WatchRevocations(
        self, request: revocation_pb2.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[Response]:
        """Not under ``rpc`` (a stream): the statuses are set here, the same way."""
        peer = context.peer()
        outcome = "cancelled"
        try:
            with self._feed.subscribe(request.resume_token) as subscription:
                log.info("revocation.watch_started", peer=peer, resumed=subscription.resumed)
                async with contextlib.aclosing(self._events(subscription)) as events:
                    async for message in events:
                        yield message
        except SubscriberLagged as ended:
            outcome = "lagged"
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(ended))
        except FeedEnded as ended:
            outcome = "closed"
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(ended))
        except Exception:
            outcome = "failed"
            log.exception("rpc.internal_error", method="WatchRevocations")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            log.info("revocation.watch_ended", peer=peer, outcome=outcome)

    async def _events(self, subscription: Subscription) -> AsyncGenerator[Response, None]:
        """The snapshot (unless resumed), then changes, with heartbeats in the gaps."""
        feed, interval = self._feed, self._heartbeat_interval
        entries = subscription.take_snapshot()
        if entries is not None:
            position = subscription.position
            count = max(1, math.ceil(len(entries) / SNAPSHOT_CHUNK))
            for index in range(count):
                chunk = entries[index * SNAPSHOT_CHUNK : (index + 1) * SNAPSHOT_CHUNK]
                complete = index == count - 1
                yield Response(
                    snapshot=revocation_pb2.Snapshot(
                        revocations=[revocation_message(r) for r in chunk], complete=complete
                    ),
                    resume_token=feed.token(position, resumable=complete),
                    heartbeat_interval=interval,
                )
            del entries
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while True:
            change = await subscription.next(max(0.0, last_sent + self._heartbeat - loop.time()))
            if change is None:
                message = Response(
                    heartbeat=revocation_pb2.Heartbeat(sent_at=timestamp(self._clock.now())),
                    resume_token=feed.token(subscription.position),
                    heartbeat_interval=interval,
                )
            else:
                seq, revocation = change
                message = Response(
                    revocation=revocation_message(revocation),
                    resume_token=feed.token(seq),
                    heartbeat_interval=interval,
                )
            yield message
            last_sent = loop.time()
