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
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from authority.api.convert import duration, instant, timestamp
from authority.api.errors import rpc
from authority.api.reader_auth import RevocationReaders
from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated
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
# Snapshot messages are cut by size, far below the 1 MiB send limit (listeners.GRPC_OPTIONS):
# a count would let a few large values (stored before values were bounded) make one
# message too large to send, and every follower's stream fail on it.
SNAPSHOT_CHUNK_BYTES = 32 * 1024

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


class CredentialExpired(Exception):
    """The token a stream was opened with has expired."""


def snapshot_chunks(
    entries: Sequence[Revocation], budget: int = SNAPSHOT_CHUNK_BYTES
) -> list[list[revocation_pb2.Revocation]]:
    """The snapshot's messages, each at most ``budget`` bytes of entries (an entry larger
    than the budget alone goes alone: the receive limit keeps it far below 1 MiB).
    Always at least one chunk, so an empty snapshot is still sent, complete."""
    chunks: list[list[revocation_pb2.Revocation]] = [[]]
    size = 0
    for entry in entries:
        message = revocation_message(entry)
        cost = message.ByteSize() + 8  # the field's tag and length
        if chunks[-1] and size + cost > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(message)
        size += cost
    return chunks


class RevocationServicer(revocation_pb2_grpc.RevocationServiceServicer):
    def __init__(
        self,
        *,
        view: RevocationSet,
        feed: RevocationFeed,
        clock: Clock,
        heartbeat: timedelta,
        readers: RevocationReaders,
    ) -> None:
        self._readers = readers
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
        self._readers.authorize(context)
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
        """Not under ``rpc`` (a stream): the statuses are set here, the same way. The stream
        ends UNAUTHENTICATED when the caller's token expires: reconnect with a fresh one."""
        peer = context.peer()
        outcome = "cancelled"
        try:
            until = self._readers.authorize(context)
        except (Unauthenticated, PermissionDenied) as refused:
            log.info("revocation.watch_refused", peer=peer, code=refused.code.value)
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if isinstance(refused, Unauthenticated)
                else grpc.StatusCode.PERMISSION_DENIED
            )
            await context.abort(code, str(refused))
            return
        try:
            with self._feed.subscribe(request.resume_token) as subscription:
                log.info("revocation.watch_started", peer=peer, resumed=subscription.resumed)
                async with contextlib.aclosing(self._events(subscription)) as events:
                    async for message in events:
                        yield message
                        if self._clock.timestamp() >= until:
                            raise CredentialExpired
        except CredentialExpired:
            outcome = "credential_expired"
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the credential of this stream expired: reconnect with a fresh token",
            )
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
            chunks = snapshot_chunks(entries)
            for index, chunk in enumerate(chunks):
                complete = index == len(chunks) - 1
                yield Response(
                    snapshot=revocation_pb2.Snapshot(revocations=chunk, complete=complete),
                    resume_token=feed.token(position, resumable=complete),
                    heartbeat_interval=interval,
                )
            del entries, chunks
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
