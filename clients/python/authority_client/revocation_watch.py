"""``WatchedRevocations``: follow ``WatchRevocations`` and answer from a local view.

A snapshot, then each new revocation, with heartbeats. Answers are local and instant
while the stream is fresh; once it has been silent or broken for longer than
``max_staleness`` it fails closed (or asks a fallback ``CallbackRevocations``), and it
reconnects with exponential backoff and jitter, resuming from the last ``resume_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from authority.jose.claims import Claims
from authority.v1 import revocation_pb2, revocation_pb2_grpc
from authority_client.credentials import TokenProvider, call_metadata, refused
from authority_client.revocation_callback import CallbackRevocations
from authority_client.revocation_status import (
    NOT_REVOKED,
    REVOKED,
    Metadata,
    RevocationStatus,
    open_channel,
    unknown,
)

# The logger users configure (the module this code lived in).
log = logging.getLogger("authority_client.revocation")


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


_KINDS = (
    revocation_pb2.REVOCATION_KIND_TOKEN,
    revocation_pb2.REVOCATION_KIND_SESSION,
    revocation_pb2.REVOCATION_KIND_SUBJECT,
    revocation_pb2.REVOCATION_KIND_CLIENT,
)
_Key = tuple[int, str]


class RevocationView:
    """The followed revocations: the authority's own rule (a token is revoked when an entry
    for its jti, sid, sub or client_id has ``issued_before`` at or after its ``iat``), with
    entries dropped after ``expires_at``, when every token they cover has expired."""

    def __init__(self) -> None:
        self._entries: dict[_Key, tuple[float, float]] = {}
        self._expiry: list[tuple[float, int, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, revocation: revocation_pb2.Revocation) -> None:
        if revocation.kind not in _KINDS or not revocation.value:
            return
        key = (int(revocation.kind), revocation.value)
        issued_before = _seconds(revocation.issued_before)
        expires_at = (
            _seconds(revocation.expires_at) if revocation.HasField("expires_at") else math.inf
        )
        current = self._entries.get(key)
        if current is not None:
            issued_before = max(issued_before, current[0])
            expires_at = max(expires_at, current[1])
        self._entries[key] = (issued_before, expires_at)
        heapq.heappush(self._expiry, (expires_at, *key))

    def expire(self, now: float) -> int:
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, value = heapq.heappop(self._expiry)
            entry = self._entries.get((kind, value))
            if entry is not None and entry[1] <= now:
                del self._entries[(kind, value)]
                dropped += 1
        return dropped

    def is_revoked(self, claims: Claims) -> bool:
        if not self._entries:
            return False
        get = self._entries.get
        for key in (
            (revocation_pb2.REVOCATION_KIND_TOKEN, claims.token_id),
            (revocation_pb2.REVOCATION_KIND_SESSION, claims.session_id),
            (revocation_pb2.REVOCATION_KIND_SUBJECT, claims.subject),
            (revocation_pb2.REVOCATION_KIND_CLIENT, claims.client_id),
        ):
            entry = get((int(key[0]), key[1])) if key[1] else None
            if entry is not None and claims.issued_at <= entry[0]:
                return True
        return False


class WatchedRevocations:
    """Follows ``WatchRevocations`` and answers from the local view while it is fresh.

    Fresh means: a complete snapshot has been applied, and a message (of any kind) arrived
    within ``max_staleness`` seconds. Otherwise ``check`` fails closed, or asks
    ``fallback`` (a ``CallbackRevocations``, which it then owns and closes) when given.
    """

    def __init__(
        self,
        authority: str | grpc.aio.Channel,
        *,
        max_staleness: float = 5.0,
        fallback: CallbackRevocations | None = None,
        fail_open: bool = False,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        credential: TokenProvider | None = None,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._authority = authority
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._owns_channel = False
        self.max_staleness = max_staleness
        self.fallback = fallback
        self.fail_open = fail_open
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.credential = credential
        self.metadata = tuple(metadata)
        self._clock = clock
        self._wall_clock = wall_clock
        self.view = RevocationView()
        self._incoming: RevocationView | None = None  # a snapshot still arriving
        self._synced = False
        self._last_message = -math.inf
        self.resume_token = ""
        self.heartbeat_interval: float | None = None
        self.connects = 0
        self.snapshots = 0
        self._task: asyncio.Task[None] | None = None
        self._call: (
            grpc.aio.UnaryStreamCall[
                revocation_pb2.WatchRevocationsRequest, revocation_pb2.WatchRevocationsResponse
            ]
            | None
        ) = None
        self._synced_event: asyncio.Event | None = None

    # -- lifecycle

    async def start(self) -> None:
        """Start following (idempotent). Returns at once; see ``wait_synced``."""
        if self._task is None or self._task.done():
            if self._synced_event is None:
                self._synced_event = asyncio.Event()
                if self._synced:
                    self._synced_event.set()
            self._task = asyncio.get_running_loop().create_task(self._follow())
        if self.fallback is not None:
            await self.fallback.start()

    async def wait_synced(self) -> None:
        """Wait until the first complete snapshot (bound it with ``asyncio.timeout``)."""
        await self.start()
        assert self._synced_event is not None
        await self._synced_event.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
        self._channel = None
        if self.fallback is not None:
            await self.fallback.aclose()

    # -- answers

    @property
    def staleness(self) -> float:
        """Seconds since the last message (infinite before the first)."""
        return self._clock() - self._last_message

    @property
    def fresh(self) -> bool:
        return self._synced and self.staleness <= self.max_staleness

    async def is_revoked(self, claims: Claims) -> bool:
        return (await self.check(claims)).revoked

    async def check(self, claims: Claims) -> RevocationStatus:
        if self._task is None:
            await self.start()
        if not self.fresh:
            if self.fallback is not None:
                return await self.fallback.check(claims)
            reason = (
                "no revocation snapshot yet"
                if not self._synced
                else f"the revocation stream has been silent for {self.staleness:.1f}s"
            )
            return unknown(reason, fail_open=self.fail_open)
        self.view.expire(self._wall_clock())
        return REVOKED if self.view.is_revoked(claims) else NOT_REVOKED

    # -- the stream

    def _stub(self) -> revocation_pb2_grpc.RevocationServiceAsyncStub:
        if self._channel is None:
            self._channel, self._owns_channel = open_channel(self._authority, self._credentials)
        return revocation_pb2_grpc.RevocationServiceStub(self._channel)

    def _silence_limit(self) -> float:
        """How long an open stream may stay silent before we drop it and reconnect."""
        limit = self.max_staleness
        if self.heartbeat_interval:
            limit = max(limit, 3 * self.heartbeat_interval)
        return limit

    async def _follow(self) -> None:
        failures = 0
        while True:
            try:
                heard = await self._follow_once()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                heard = False
                refused(error, self.credential)
                log.warning("revocation stream broke: %s %s", error.code().name, error.details())
            except TimeoutError:
                heard = True
                log.warning(
                    "revocation stream silent for %.1fs; reconnecting", self._silence_limit()
                )
            except Exception:
                heard = False
                log.exception("revocation stream failed")
            finally:
                self._incoming = None  # a half-received snapshot is useless
                if self._call is not None:
                    self._call.cancel()
                    self._call = None
            failures = 0 if heard else failures + 1
            delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 30))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)

    async def _follow_once(self) -> bool:
        """One stream, until it ends or breaks. True if it delivered anything."""
        self.connects += 1
        request = revocation_pb2.WatchRevocationsRequest(resume_token=self.resume_token)
        metadata = await call_metadata(self.credential, self.metadata)
        call = self._stub().WatchRevocations(request, metadata=metadata)
        self._call = call
        heard = False
        while True:
            message = await asyncio.wait_for(call.read(), self._silence_limit())
            if message is grpc.aio.EOF:
                return heard
            assert isinstance(message, revocation_pb2.WatchRevocationsResponse)
            heard = True
            self._apply(message)

    def _apply(self, message: revocation_pb2.WatchRevocationsResponse) -> None:
        """Apply one event. Snapshot chunks build a new view that replaces the current one
        only when complete; a resume token received mid-snapshot is not kept, so a
        reconnection never resumes past a snapshot we did not finish."""
        self._last_message = self._clock()
        if message.HasField("heartbeat_interval"):
            self.heartbeat_interval = message.heartbeat_interval.ToTimedelta().total_seconds()
        event = message.WhichOneof("event")
        commit = True
        if event == "snapshot":
            if self._incoming is None:
                self._incoming = RevocationView()
            for revocation in message.snapshot.revocations:
                self._incoming.add(revocation)
            if message.snapshot.complete:
                self.view, self._incoming = self._incoming, None
                self.view.expire(self._wall_clock())
                self.snapshots += 1
                self._synced = True
                if self._synced_event is not None:
                    self._synced_event.set()
            else:
                commit = False
        elif event == "revocation":
            self.view.add(message.revocation)
            if self._incoming is not None:
                self._incoming.add(message.revocation)
                commit = False
        elif self._incoming is not None:
            commit = False
        if commit and message.resume_token:
            self.resume_token = message.resume_token
