"""What every RPC runs in: request id, decode guard, admin gate, metrics and the rpc line.

One wrapper per method, built when the method's handler is registered
(``handler_wrapping.Registrar``), so a call pays for what it does, not for finding out
what to do: the per-method constants (the metric label children, the line's method
text, whether the method is admin-only or mints tokens) are bound once. In the order a
call meets them:

1. tracing, when configured (``otel_grpc.traced``): the server span is current for the
   rest, so the rpc line carries its trace id, and refused calls are traced too;
2. the request id (the caller's ``x-request-id``, else a new one): bound for the call's
   log lines and events, and sent back in the trailing metadata;
3. a request that could not be decoded is answered INVALID_ARGUMENT (``api.decoding``);
4. an admin method refuses a caller without the admin credential (``api.admin_auth``);
5. the handler; then one Prometheus count and latency (``rpc_metrics.RpcRecorder``) and one
   ``rpc`` line (``observability.rpc_line``), whatever the outcome.

A unary-response call runs all of it in one coroutine; a streaming one composes the
same steps around the handler's stream.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

from authority.api import decoding
from authority.api.admin_auth import ADMIN_METHODS, require_admin
from authority.api.errors import abort
from authority.api.handler_wrapping import Behaviour, Handler, call_metadata, rewrap
from authority.api.request_context import REQUEST_ID
from authority.domain.call_metadata import (
    AUTHORIZATION,
    REQUEST_ID_HEADER,
    bearer_token,
    new_request_id,
)
from authority.domain.call_metadata import random_bits as _random_bits
from authority.domain.call_metadata import request_id as caller_request_id
from authority.domain.errors import AuthorityError
from authority.observability import metrics, rpc_line, rpc_metrics
from authority.observability.logging import INSTALLED, STDOUT
from authority.services.admin_credential import AdminCredential

if TYPE_CHECKING:
    from authority.observability.otel import Tracing

Context = grpc.aio.ServicerContext[Any, Any]
_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_Undecodable = decoding.Undecodable
_perf_counter = time.perf_counter
_ns = time.time_ns
_bind_request_id = REQUEST_ID.bind
_call_metadata = call_metadata.get


def _request_id_and_credential(context: Context) -> tuple[Any, str, bool]:
    """The call's metadata, its request id (the caller's, else a new one) and whether it
    carries a credential: one pass over the metadata (the one the handler lookup handed
    over, else the context's)."""
    metadata: Any = _call_metadata()
    if metadata is None:
        metadata = context.invocation_metadata() or ()
    request_id = None
    authorized = False
    for key, value in metadata:
        if key == REQUEST_ID_HEADER and not request_id:
            request_id = caller_request_id(((key, value),))
        elif key == AUTHORIZATION:
            authorized = True
    return metadata, request_id or new_request_id(), authorized


def _begin(context: Context, request_id: str) -> Any:
    """Bind the request id for the call's lines and events, and send it back: in the
    trailing metadata, which costs nothing extra on the wire, unlike an early
    send_initial_metadata (api.errors keeps it when it adds retry-after). The token
    undoes the binding.

    One variable per call: grpc.aio runs each call in a task of its own, whose context
    starts as a copy of the server's, where nothing (no principal, no request id) is
    bound; what a call binds ends with its task."""
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
    return _bind_request_id(request_id)


class _Call:
    """What a streaming call's line needs, read at its start while the call is alive:
    after a cancellation grpc may have freed it, and ``peer()`` on a freed call crashes
    the process."""

    __slots__ = (
        "authorized",
        "chain",
        "metadata",
        "peer",
        "request_id",
        "started",
        "token",
        "write_line",
    )

    def __init__(self, context: Context) -> None:
        self.started = _perf_counter()
        self.metadata, request_id, self.authorized = _request_id_and_credential(context)
        self.request_id = request_id
        self.token = _begin(context, request_id)
        chain = self.chain = rpc_line.chain()
        self.write_line = rpc_line.enabled(chain)
        self.peer = (context.peer() or "") if self.write_line else ""


class CallPipeline:
    """Wraps handlers (``wrap``) for one server: its admin credential (None: this
    listener refuses admin RPCs), ``is_admin`` to name the admin on the line, and the
    tracing (None: no span wrapper at all)."""

    def __init__(
        self,
        *,
        admin: AdminCredential | None,
        is_admin: Callable[[str], bool] | None = None,
        tracing: Tracing | None = None,
        admin_methods: frozenset[str] = ADMIN_METHODS,
    ) -> None:
        self._admin = admin
        self._is_admin = is_admin
        self._tracing = tracing
        self._admin_methods = admin_methods

    def wrap(self, method: str, handler: Handler) -> Handler:
        gated = method in self._admin_methods
        if gated and handler.unary_unary is None:  # fail closed: every admin RPC is unary
            raise TypeError(f"{method}: only unary admin RPCs are gated")
        streamed = handler.stream_unary is not None or handler.stream_stream is not None
        wrapped = rewrap(
            handler,
            lambda behaviour: self._unary(method, behaviour, gated, streamed),
            lambda behaviour: self._stream(method, behaviour, streamed),
            request_deserializer=decoding.safe_deserializer(handler.request_deserializer),
        )
        if self._tracing is not None:
            from authority.observability.otel_grpc import traced  # noqa: PLC0415 - optional

            wrapped = traced(self._tracing, method, wrapped)
        return wrapped

    def _finish(
        self,
        line: rpc_line.RpcLine,
        observe: metrics.RpcObserver,
        call: _Call,
        code: grpc.StatusCode,
    ) -> None:
        elapsed = _perf_counter() - call.started
        try:
            observe(code, elapsed, None)
            if call.write_line:
                who = rpc_line.principal.get()
                if who is None and call.authorized:
                    who = self._caller(call.metadata)
                line.write(call.chain, call.peer, who, elapsed, code, call.request_id)
        finally:
            # ValueError: a stream's generator closed from another context (grpc finalising
            # a cancelled call); the call's own context ends with it, nothing to undo.
            with contextlib.suppress(ValueError):
                REQUEST_ID.reset(call.token)

    def _caller(self, metadata: Any) -> str | None:
        if self._is_admin is None:
            return None
        bearer = bearer_token(metadata)
        return "admin" if bearer is not None and self._is_admin(bearer) else None

    def _unary(  # noqa: PLR0915 - the whole call in one coroutine, on purpose
        self, method: str, behaviour: Behaviour, gated: bool, streamed: bool
    ) -> Behaviour:
        line = rpc_line.RpcLine(method)
        recorder = rpc_metrics.rpc_recorder(method)
        record_latency = recorder.latencies.append
        record_code = recorder.codes.append
        codes = recorder.codes
        results = recorder.results
        pending = recorder.pending
        mints = method in rpc_line.MINTING
        admin = self._admin
        caller = self._caller
        chain_of = rpc_line.chain
        enabled = rpc_line.enabled
        principal = rpc_line.principal.get
        write = line.write
        bind = _bind_request_id
        installed = INSTALLED
        config = installed.config
        # RpcLine.write's usual case, inline: the line's fields as one tuple on stdout's
        # records, while the request id is the only context variable ever bound.
        head = line.head
        own_head = line.own_head
        bound = rpc_line.bound_variables()
        records = STDOUT.records

        # Everything in one coroutine, in locals: this runs on every call of the method.
        # (What _request_id_and_credential and _begin do, inline: a Python call is a
        # visible part of a call's cost.) Nothing is unbound at the end: the call's task,
        # and its context, end with it (see _begin).
        async def call(request: Any, context: Context) -> Any:  # noqa: PLR0915 - on purpose
            started = _perf_counter()
            metadata: Any = _call_metadata()
            if metadata is None:
                metadata = context.invocation_metadata() or ()
            request_id = None
            authorized = False
            for key, value in metadata:
                if key == REQUEST_ID_HEADER:
                    if not request_id:
                        request_id = caller_request_id(((key, value),))
                elif key == AUTHORIZATION:
                    authorized = True
            line_head = head
            if not request_id:
                request_id = _random_bits(64).to_bytes(8, "big").hex()  # new_request_id()
                line_head = own_head
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            bind(request_id)
            # json_chain(), inline: the installed chain, while it is structlog's
            chain = installed.chain
            if chain is not None and (
                config is None or config.default_processors is not chain.processors
            ):
                chain = chain_of()
            write_line = chain.info if chain is not None else enabled(None)
            # Read now, while the call is alive: after a cancellation grpc may have freed
            # it, and peer() on a freed call crashes the process.
            peer = (context.peer() or "") if write_line else ""
            code = _UNKNOWN
            response = None
            try:
                if streamed:  # stream-unary: each request is checked as it is read
                    request = decoding.checked_requests(request, context)
                elif request.__class__ is _Undecodable:
                    await decoding.refuse(request, context)
                if gated:
                    try:
                        require_admin(context, admin)
                    except AuthorityError as error:
                        await abort(context, error)
                response = await behaviour(request, context)
                code = context.code() or _OK
                return response
            except grpc.aio.AbortError:
                code = context.code() or _UNKNOWN
                raise
            except BaseException as error:
                code = rpc_line.status_of(error)
                raise
            finally:
                elapsed = _perf_counter() - started
                # the metrics: recorder.observe, inline
                record_latency(elapsed)
                record_code(code)
                if results is not None and response is not None:
                    results.append(response.result)
                if len(codes) == 1:
                    pending()
                if write_line:
                    who = principal()
                    if who is None and mints and response is not None:
                        who = rpc_line.minted_subject(response)
                    if who is None and authorized:
                        who = caller(metadata)
                    if chain is None or chain.extra or bound is None or len(bound) != 1:
                        write(chain, peer, who, elapsed, code, request_id)
                    else:
                        name = "OK" if code is _OK else code.name
                        records.append(
                            (line_head, peer, who, elapsed * 1000, name, request_id, _ns())
                        )
                        due = STDOUT._flushing_on  # what STDOUT.add_record checks
                        if len(records) == 1 or due is None or not due.is_running():
                            STDOUT.arrange_flush()

        return call

    def _stream(self, method: str, behaviour: Behaviour, streamed: bool) -> Behaviour:
        line = rpc_line.RpcLine(method)
        observe = rpc_metrics.rpc_observer(method)
        finish = self._finish

        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            state = _Call(context)
            code = _UNKNOWN
            try:
                if streamed:
                    request = decoding.checked_requests(request, context)
                elif request.__class__ is _Undecodable:
                    await decoding.refuse(request, context)
                result = behaviour(request, context)
                if hasattr(result, "aclose"):
                    # Close the handler's generator here, in this task, when the call
                    # ends early (a cancelled stream), not later from the GC.
                    async with contextlib.aclosing(result) as items:
                        async for item in items:
                            yield item
                elif hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
                code = context.code() or _OK
            except grpc.aio.AbortError:
                code = context.code() or _UNKNOWN
                raise
            except BaseException as error:
                code = rpc_line.status_of(error)
                raise
            finally:
                finish(line, observe, state, code)

        return call
