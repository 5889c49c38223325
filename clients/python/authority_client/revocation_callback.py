"""``CallbackRevocations``: ask ``CheckRevocations``, batching concurrent checks.

Checks arriving within a few milliseconds share one RPC, "not revoked" answers are
cached briefly, and an unreachable authority fails closed (the token counts as revoked,
with a detail saying the state is unknown) unless configured to fail open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from authority.jose.cache import BoundedCache
from authority.jose.claims import Claims
from authority.v1 import revocation_pb2, revocation_pb2_grpc
from authority_client.credentials import TokenProvider, call_metadata, refused
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

# The contract's limit per CheckRevocations (revocation.proto: at most 500 tokens): a
# larger batch is refused whole, so every full batch would fail closed.
MAX_BATCH = 500

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
            self._channel, self._owns_channel = open_channel(self._authority, self._credentials)
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
