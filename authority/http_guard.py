"""Bounds for the HTTP listeners: a header-read deadline, an idle deadline and a cap.

aiohttp has a keep-alive timeout but no limit on how long a peer may take to send its
request headers, nor on how many connections it holds. ``ConnectionGuard`` wraps the
protocol of each accepted connection (public asyncio interfaces only) and a middleware
marks when a request's handler runs:

- a connection must complete its request headers within ``header_timeout`` of being
  accepted, and the next request's within ``idle_timeout`` of the previous response, or it
  is closed (a slowloris sender trickling one byte at a time gains nothing);
- a handler runs at most ``handler_timeout`` (then 504);
- at most ``cap`` connections are open: a new one first evicts the longest-waiting
  connection that is not in a request (idle or still sending headers), so idle and slow
  peers can never shut new clients out; only when every connection is inside a request is
  the new one closed at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Closed = Callable[[str], None]


class _Guarded(asyncio.Protocol):
    """Delegates to aiohttp's protocol; the guard decides when the transport closes."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.in_request = 0

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # A stream transport (a cast: uvloop's do not subclass asyncio.Transport).
        transport = cast(asyncio.Transport, base)
        if not self._guard.admit(self, transport):
            transport.abort()  # the descriptor is released now, not after a timeout
            return
        self.transport = transport
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused: aiohttp never saw it
        self._guard.forget(self)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    """One per listener. ``protocol_factory`` wraps aiohttp's; ``middleware`` goes in the
    application (it needs to see when each request's headers are complete)."""

    def __init__(
        self,
        *,
        cap: int,
        header_timeout: float,
        idle_timeout: float,
        handler_timeout: float,
        on_close: Closed | None = None,
    ) -> None:
        if cap < 1:
            raise ValueError("the connection cap must be positive")
        self.cap = cap
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.handler_timeout = handler_timeout
        self._on_close = on_close
        self._by_transport: dict[asyncio.BaseTransport, _Guarded] = {}
        # Connections not inside a request, longest-waiting first: the eviction order.
        self._waiting: OrderedDict[_Guarded, None] = OrderedDict()
        self.closed: dict[str, int] = {"header_timeout": 0, "idle_timeout": 0}
        self.closed |= {"evicted": 0, "refused": 0}

    @property
    def open(self) -> int:
        return len(self._by_transport)

    def protocol_factory(
        self, inner: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            # aiohttp's protocol, a stream protocol (asyncio.Protocol by duck typing).
            return _Guarded(self, cast(asyncio.Protocol, inner()))

        return make

    # -- the connection lifecycle

    def admit(self, connection: _Guarded, transport: asyncio.Transport) -> bool:
        if len(self._by_transport) >= self.cap:
            if not self._waiting:
                self._count("refused")
                return False
            oldest = next(iter(self._waiting))
            self._close(oldest, "evicted")
        self._by_transport[transport] = connection
        self._wait(connection, self.header_timeout, "header_timeout")
        return True

    def forget(self, connection: _Guarded) -> None:
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None
        self._waiting.pop(connection, None)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)

    def _wait(self, connection: _Guarded, timeout: float, reason: str) -> None:
        """Not in a request: closed unless the next request's headers arrive in time."""
        if connection.deadline is not None:
            connection.deadline.cancel()
        self._waiting[connection] = None
        self._waiting.move_to_end(connection)
        connection.deadline = asyncio.get_running_loop().call_later(
            timeout, self._close, connection, reason
        )

    def _close(self, connection: _Guarded, reason: str) -> None:
        transport = connection.transport
        self.forget(connection)
        if transport is not None and not transport.is_closing():
            self._count(reason)
            transport.abort()

    def _count(self, reason: str) -> None:
        self.closed[reason] += 1
        if self._on_close is not None:
            self._on_close(reason)

    # -- requests

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Headers are complete: no deadline while the handler runs (bounded by its own)."""
        connection = self._by_transport.get(request.transport)  # type: ignore[arg-type]
        if connection is not None:
            if connection.deadline is not None:
                connection.deadline.cancel()
                connection.deadline = None
            self._waiting.pop(connection, None)
            connection.in_request += 1
        try:
            async with asyncio.timeout(self.handler_timeout):
                return await handler(request)
        finally:
            if connection is not None:
                connection.in_request -= 1
                still_open = connection.transport in self._by_transport
                if connection.in_request == 0 and still_open:
                    self._wait(connection, self.idle_timeout, "idle_timeout")


def describe(guard: ConnectionGuard) -> dict[str, Any]:
    """For logs: the cap and how many connections each reason closed."""
    return {"cap": guard.cap, "open": guard.open, **guard.closed}


class GuardedListener:
    """One address, bound before its application exists, then served under a guard.

    ``bind`` tells the port (port 0 picks a free one), which the issuer names and the
    application is built with; until ``serve`` the sockets do not listen, so a connection
    is refused as it would be before binding."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        handshake_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.address = address
        self.handshake_timeout = handshake_timeout
        self.ssl_context = ssl_context
        self.reuse_port = reuse_port
        self.runner: web.BaseRunner | None = None
        self.guard: ConnectionGuard | None = None
        self._protocol: Callable[[], asyncio.Protocol] | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def bind(self) -> int:
        """Bind (not listen) the address; the bound port."""
        host, port = self.address
        options: dict[str, Any] = {"reuse_port": self.reuse_port or None}
        if self.ssl_context is not None:
            # Connections in the TLS handshake are not yet counted: bound them by time.
            options |= {"ssl": self.ssl_context, "ssl_handshake_timeout": self.handshake_timeout}
        self._server = await asyncio.get_running_loop().create_server(
            self._accept, host, port, start_serving=False, **options
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _accept(self) -> asyncio.Protocol:
        assert self._protocol is not None  # the sockets listen only once served
        return self._protocol()

    async def serve(self, runner: web.BaseRunner, guard: ConnectionGuard) -> None:
        """Accept connections for ``runner`` (set up), every one under ``guard``."""
        inner = runner.server
        if inner is None:
            raise RuntimeError("set the runner up first")
        if self._server is None:
            raise RuntimeError("bind the listener first")
        self.runner, self.guard = runner, guard
        self._protocol = guard.protocol_factory(inner)
        await self._server.start_serving()

    async def stop(self) -> None:
        """Stop accepting; the runner's cleanup then closes the connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
