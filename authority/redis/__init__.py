"""Redis adapters for the production mode: the revocation fan-out and the shared attempt gate.

Redis is never the durable record (the store is): it makes replicas learn of revocations
in milliseconds and lets every replica and worker draw on the same rate limits and
lockouts. Both adapters turn every Redis failure into ``Unavailable`` with a message
that names no host, URL or password, so the caller decides whether to fail open or closed.

The clients never retry a command by themselves: the gate's scripts are not idempotent
(a retried charge would be charged twice), and a retry would stretch the time a caller
waits on a dead Redis beyond ``socket_timeout``. Stale pooled connections (after a Redis
restart) are still replaced transparently, because the pool checks a connection before
handing it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authority.domain.errors import Unavailable

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

# What a Redis call may raise when Redis is down, slow, or refuses the command.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)


def make_client(url: str, socket_timeout: float, tracing: Tracing | None = None) -> Redis:
    """A client that does no I/O until used, gives up after ``socket_timeout`` and never
    retries (see the module docstring). Responses stay bytes: we decode what we trust.
    With ``tracing``, each command is a child span (``authority.redis.traced``)."""
    cls = Redis
    if tracing is not None:
        from authority.redis.traced import TracedRedis  # noqa: PLC0415 - the otel extra

        cls = TracedRedis
    client = cls.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    if tracing is not None:
        client.tracing = tracing  # type: ignore[attr-defined]
    return client


def unavailable(exc: BaseException) -> Unavailable:
    """``Unavailable`` for a Redis failure. Redis errors quote host and port (and a URL
    may carry a password), so the message says only what kind of failure it was."""
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        reason = "timed out"
    elif isinstance(exc, RedisConnectionError | OSError):
        reason = "cannot connect"
    else:
        reason = f"the command failed ({type(exc).__name__})"
    return Unavailable(f"Redis is unavailable: {reason}")
