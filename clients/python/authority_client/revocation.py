"""Revocation for local verifiers: ask the authority in batches, or follow its stream.

Local verification proves a token was issued and has not expired; only the authority
knows whether it was revoked since. Two ways to learn that, behind one interface
(``check(claims) -> RevocationStatus``):

* ``CallbackRevocations`` asks ``CheckRevocations``. Checks arriving within a few
  milliseconds share one RPC, "not revoked" answers are cached briefly, and an
  unreachable authority fails closed (the token counts as revoked, with a detail saying
  the state is unknown) unless configured to fail open.
* ``WatchedRevocations`` follows ``WatchRevocations``: a snapshot, then each new
  revocation, with heartbeats. Answers are local and instant while the stream is fresh;
  once it has been silent or broken for longer than ``max_staleness`` it fails closed
  (or asks a fallback ``CallbackRevocations``), and it reconnects with exponential backoff
  and jitter, resuming from the last ``resume_token``.

Both RPCs need a caller credential (``credential=``, e.g. ``ClientCredentialsTokens``, whose
token carries the scope ``authority:revocations.read``); without one the authority answers
UNAUTHENTICATED, which counts as unreachable (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from authority.jose.cache import BoundedCache
from authority.jose.claims import Claims
from authority.v1 import revocation_pb2, revocation_pb2_grpc
from authority_client.credentials import TokenProvider, call_metadata, refused

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]
# The contract's limit per CheckRevocations (revocation.proto: at most 500 tokens): a
# larger batch is refused whole, so every full batch would fail closed.
MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """Whether to treat a token as revoked. ``known`` is False when the authority could not
    say (unreachable, stale stream): ``revoked`` then reflects fail-closed or fail-open."""

    revoked: bool
    detail: str = ""
    known: bool = True


NOT_REVOKED = RevocationStatus(False)
REVOKED = RevocationStatus(True, "the token has been revoked")


def unknown(reason: str, *, fail_open: bool) -> RevocationStatus:
    """The answer when the revocation state cannot be known."""
    if fail_open:
        return RevocationStatus(False, f"the revocation state is unknown ({reason})", known=False)
    return RevocationStatus(
        True, f"the revocation state is unknown ({reason}); failing closed", known=False
    )


class RevocationChecker(Protocol):
    """What ``LocalVerifier`` needs: an answer per verified token, and a lifecycle."""

    async def check(self, claims: Claims) -> RevocationStatus: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def _channel(
    authority: str | grpc.aio.Channel, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.aio.Channel, bool]:
    """The channel, and whether we own it (and so must close it)."""
    if not isinstance(authority, str):
        return authority, False
    if credentials is not None:
        return grpc.aio.secure_channel(authority, credentials), True
    return grpc.aio.insecure_channel(authority), True


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


# -- callback ---------------------------------------------------------------------

_Identity = tuple[str, str, str, str, float]


def _identity(claims: Claims) -> _Identity:
    return (
        claims.token_id,
        claims.session_id,
        claims.subject,
        claims.client_id,
        claims.issued_at,
    )


def _timestamp(seconds: float) -> Timestamp:
    """``iat`` with its fraction, to the microsecond (as the authority compares it)."""
    whole, micros = divmod(round(seconds * 1_000_000), 1_000_000)
    return Timestamp(seconds=whole, nanos=micros * 1_000)


class CallbackRevocations:
    """Asks ``CheckRevocations``, batching concurrent checks into one RPC.

    A batch is sent ``batch_window`` seconds after its first check, or at once when it
    holds ``max_batch`` distinct tokens. "Not revoked" is cached for ``negative_ttl``
    seconds (the staleness a caller accepts in exchange for fewer RPCs); "revoked" is
    cached until evicted, since a revocation is never undone. Errors are never cached.
    """

    def __init__(
        self,
        authority: str | grpc.aio.Channel,
        *,
        batch_window: float = 0.002,
        max_batch: int = 256,
        negative_ttl: float = 1.0,
        fail_open: bool = False,
        timeout: float = 2.0,
        credential: TokenProvider | None = None,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        self._authority = authority
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._owns_channel = False
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.negative_ttl = negative_ttl
        self.fail_open = fail_open
        self.timeout = timeout
        self.credential = credential
        self.metadata = tuple(metadata)
        self.cache_size = max(1, cache_size)
        self._clock = clock
        self._cache: BoundedCache[_Identity, tuple[bool, float]] = BoundedCache(self.cache_size)
        self._futures: dict[_Identity, asyncio.Future[RevocationStatus]] = {}
        self._pending: list[_Identity] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.rpcs = 0

    def _stub(self) -> revocation_pb2_grpc.RevocationServiceAsyncStub:
        if self._channel is None:
            self._channel, self._owns_channel = _channel(self._authority, self._credentials)
        return revocation_pb2_grpc.RevocationServiceStub(self._channel)

    async def start(self) -> None:
        self._stub()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self.timeout)
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
        self._channel = None

    async def is_revoked(self, claims: Claims) -> bool:
        return (await self.check(claims)).revoked

    async def check(self, claims: Claims) -> RevocationStatus:
        key = _identity(claims)
        cached = self._cache.get(key)
        if cached is not None:
            revoked, until = cached
            if revoked:
                return REVOKED
            if self._clock() < until:
                return NOT_REVOKED
            del self._cache[key]
        future = self._futures.get(key)  # asked already: in this batch or one in flight
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._futures[key] = future
            self._pending.append(key)
            if len(self._pending) >= self.max_batch:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.batch_window, self._flush)
        # Shielded: one caller giving up must not cancel the answer others share.
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _answer(self, key: _Identity, status: RevocationStatus) -> None:
        future = self._futures.pop(key, None)
        if future is not None and not future.done():
            future.set_result(status)

    async def _send(self, keys: list[_Identity]) -> None:
        request = revocation_pb2.CheckRevocationsRequest(
            tokens=[
                revocation_pb2.TokenIdentity(
                    token_id=jti,
                    session_id=sid,
                    subject=sub,
                    client_id=client_id,
                    issued_at=_timestamp(iat),
                )
                for jti, sid, sub, client_id, iat in keys
            ]
        )
        self.rpcs += 1
        try:
            metadata = await call_metadata(self.credential, self.metadata)
            response = await self._stub().CheckRevocations(
                request, timeout=self.timeout, metadata=metadata
            )
            if len(response.revoked) != len(keys):
                raise ValueError(f"{len(response.revoked)} answers for {len(keys)} tokens")
        except (grpc.aio.AioRpcError, ValueError) as exc:
            if isinstance(exc, grpc.aio.AioRpcError):
                refused(exc, self.credential)
            reason = (
                f"CheckRevocations failed: {exc.code().name}"
                if isinstance(exc, grpc.aio.AioRpcError)
                else f"CheckRevocations answered badly: {exc}"
            )
            log.warning("%s (%d tokens)", reason, len(keys))
            status = unknown(reason, fail_open=self.fail_open)
            for key in keys:
                self._answer(key, status)
            return
        except BaseException as exc:  # cancelled (closing) or a bug: never leave callers hanging
            for key in keys:
                self._answer(key, unknown(type(exc).__name__, fail_open=self.fail_open))
            raise
        until = self._clock() + self.negative_ttl
        for key, revoked in zip(keys, response.revoked, strict=True):
            self._cache[key] = (revoked, until)
            self._answer(key, REVOKED if revoked else NOT_REVOKED)


# -- watch ------------------------------------------------------------------------

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
            self._channel, self._owns_channel = _channel(self._authority, self._credentials)
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
