"""Structured logs: JSON lines (or a console renderer), one line per RPC, no secrets ever.

Redaction is a processor that runs last before rendering, on every line, so it also
covers tracebacks and whatever a future call site passes by mistake. It works two ways
because either alone leaks: by key name (a password has no recognisable shape) and by
value shape (a token pasted into an error message has no telling key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from authority.domain import call_metadata
from authority.domain.call_metadata import REQUEST_ID_HEADER
from authority.observability import metrics, tracing

log = structlog.get_logger("authority.rpc")

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time

REDACTED = "[REDACTED]"

# A key is sensitive when its lower-cased name contains one of these...
_SENSITIVE_FRAGMENTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "private",
    "authorization",
    "kek",
    "credential",
    "cookie",
    "api_key",
    "apikey",
)
# ...unless it names metadata about the secret, not the secret (kek_id, token_type, ...).
# Their values are still scanned for secret shapes below.
_METADATA_SUFFIXES = (
    "_id",
    "_ids",
    "_type",
    "_count",
    "_bytes",
    "_at",
    "_seconds",
    "_ttl",
    "_kind",
)

_JWT = r"eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)+"
# Our secrets are a prefix and a random base64url body (``secrets.token_urlsafe(32)``: 43
# characters). Recognised two ways, so that identifiers which merely contain a prefix
# (``config.short_prepublish``, ``import_signing_keys``) stay readable:
# - where a secret starts: the prefix not glued to a preceding letter, digit or ``_``;
# - anywhere (glued to a word, too): a body of at least 32 characters that has an upper-
#   case letter, which a random body has (all but 2e-10 of them) and a snake_case name has
#   not.
_PREFIXES = r"(?:rt|cs|adm|whsec)_"
_B64URL = r"[A-Za-z0-9_-]"
_PREFIXED = (
    rf"(?<![A-Za-z0-9_]){_PREFIXES}{_B64URL}{{8,}}"
    rf"|{_PREFIXES}(?={_B64URL}*[A-Z]){_B64URL}{{32,}}"
)
_PEM = r"-----BEGIN[^-\n]*-----[\s\S]*?(?:-----END[^-\n]*-----|\Z)"
_SECRET_SHAPES = re.compile(f"(?P<jwt>{_JWT})|(?P<prefixed>{_PREFIXED})|(?P<pem>{_PEM})")


def fingerprint(secret: str) -> str:
    """Enough to correlate two lines about the same token, useless to replay it."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _replace(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.lastgroup == "jwt":
        return f"jwt:{fingerprint(text)}"
    if match.lastgroup == "prefixed":
        return f"{text.split('_', 1)[0]}_[REDACTED:{fingerprint(text)}]"
    return "[REDACTED PEM]"


def sensitive_key(key: object) -> bool:
    name = str(key).lower()
    return any(f in name for f in _SENSITIVE_FRAGMENTS) and not name.endswith(_METADATA_SUFFIXES)


def scrub(value: Any) -> Any:
    """``value`` with every secret-shaped substring replaced, recursively."""
    if isinstance(value, str):
        return _SECRET_SHAPES.sub(_replace, value) if value else value
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {scrub(k): REDACTED if sensitive_key(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


def redact(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The structlog processor: sensitive keys lose their value, every value is scanned."""
    return {
        k: REDACTED if sensitive_key(k) and k != "event" else scrub(v)
        for k, v in event_dict.items()
    }


class _Stdout:
    """stdout that drops lines it cannot write: a worker whose supervisor died (its
    stdout a broken pipe) must still be able to log its way through a clean shutdown."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except (BrokenPipeError, OSError, ValueError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            sys.stdout.flush()


def processors(fmt: str = "json", *, extra: Sequence[Processor] = ()) -> list[Processor]:
    """The chain; ``extra`` runs before redaction (tracing's trace and span ids)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        *extra,
        redact,  # after format_exc_info, so tracebacks are scanned too
        renderer,
    ]


def configure_logging(*, fmt: str = "json", level: str = "info") -> None:
    """JSON lines on stdout with timestamp, level and event (``console`` for people)."""
    structlog.configure(
        # With tracing on, lines logged inside a span carry its trace_id and span_id.
        processors=processors(fmt, extra=tracing.log_processors()),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(_Stdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # asyncpg logs every failed reconnection with a traceback while PostgreSQL is down;
    # readiness and our own Unavailable answers already say so, once.
    logging.getLogger("asyncpg").setLevel(logging.ERROR)


# -- the per-RPC line ---------------------------------------------------------------------

# Who the call authenticated, for the RPC line. Code that learns it may set it; the
# interceptor otherwise derives it (the admin credential, or the ``sub`` of the token
# Issue/Refresh just minted).
principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authority_principal", default=None
)

_MINTING = frozenset({"/authority.v1.TokenService/Issue", "/authority.v1.TokenService/Refresh"})


def _minted_subject(response: Any) -> str | None:
    """The ``sub`` of the access token in an Issue/Refresh answer (ours, just signed)."""
    token = getattr(getattr(response, "tokens", None), "access_token", "")
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        return None
    with contextlib.suppress(ValueError):
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        sub = claims.get("sub") if isinstance(claims, dict) else None
        return sub if isinstance(sub, str) else None
    return None


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """One log line and the RPC metrics per call, with a request id bound for the call.

    Wrapped handlers are cached per method, so the per-call cost is the wrapper itself:
    a clock read, a metadata scan, two counter updates and (at info level) one line.
    The cache holds one server's handlers: give every server its own interceptor.
    """

    def __init__(self, *, is_admin: Callable[[str], bool] | None = None) -> None:
        self._is_admin = is_admin
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        observe = metrics.rpc_observer(method)
        start_call = self._start
        finish_call = self._finish
        mints = method in _MINTING

        def unary_response(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                state = start_call(context)
                code = grpc.StatusCode.UNKNOWN
                response = None
                try:
                    response = await behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except BaseException as error:
                    code = _status_of(error)
                    raise
                finally:
                    who = _minted_subject(response) if mints and response is not None else None
                    finish_call(
                        method=method,
                        observe=observe,
                        call=state,
                        code=code,
                        minted_for=who,
                        response=response,
                    )

            return call

        def stream_response(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                state = start_call(context)
                code = grpc.StatusCode.UNKNOWN
                try:
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
                    code = context.code() or grpc.StatusCode.OK
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except BaseException as error:
                    code = _status_of(error)
                    raise
                finally:
                    finish_call(
                        method=method,
                        observe=observe,
                        call=state,
                        code=code,
                        minted_for=None,
                        response=None,
                    )

            return call

        return _rewrap(handler, unary_response, stream_response)

    @staticmethod
    def _start(context: grpc.aio.ServicerContext[Any, Any]) -> _Call:
        """Everything the line needs from ``context`` is read here, while the call is
        alive: after a cancellation grpc may have freed it, and ``peer()`` on a freed
        call crashes the process."""
        started = time.perf_counter()
        metadata = context.invocation_metadata()
        request_id = call_metadata.request_id(metadata) or call_metadata.new_request_id()
        # Trailing metadata: it costs nothing extra on the wire, unlike an early
        # send_initial_metadata; api.errors keeps it when it adds retry-after.
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        principal.set(None)
        return _Call(
            started=started,
            tokens=structlog.contextvars.bind_contextvars(request_id=request_id),
            peer=context.peer() if _info_enabled() else "",
            bearer=call_metadata.bearer_token(metadata),
        )

    def _finish(
        self,
        *,
        method: str,
        observe: metrics.RpcObserver,
        call: _Call,
        code: grpc.StatusCode,
        minted_for: str | None,
        response: Any,
    ) -> None:
        elapsed = time.perf_counter() - call.started
        observe(code, elapsed, response)
        try:
            if _info_enabled():
                log.info(
                    "rpc",
                    method=method,
                    peer=call.peer,
                    principal=principal.get() or minted_for or self._caller(call.bearer),
                    latency_ms=round(elapsed * 1000, 3),
                    code=code.name,
                )
        finally:
            # ValueError: a stream's generator closed from another context (grpc finalising
            # a cancelled call); the call's own context ends with it, nothing to undo.
            with contextlib.suppress(ValueError):
                structlog.contextvars.reset_contextvars(**call.tokens)

    def _caller(self, bearer: str | None) -> str | None:
        if self._is_admin is None or bearer is None:
            return None
        return "admin" if self._is_admin(bearer) else None


@dataclass(slots=True)
class _Call:
    started: float
    tokens: Mapping[str, contextvars.Token[Any]]
    peer: str
    bearer: str | None


def _rewrap(
    handler: Handler,
    unary_response: Callable[[Callable[..., Any]], Callable[..., Any]],
    stream_response: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> Handler:
    """The same handler, its behaviour wrapped by the matching wrapper."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            stream_response(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            stream_response(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def _info_enabled() -> bool:
    """Skip building the line (peer, principal) when info is filtered out."""
    check = getattr(log, "is_enabled_for", None)
    return True if check is None else bool(check(logging.INFO))


def _status_of(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):  # the caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
