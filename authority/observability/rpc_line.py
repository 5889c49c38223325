"""The per-RPC ``rpc`` line: one per call, with its request id, and no secret in it.

While ``configure_logging``'s JSON chain is structlog's, the line is rendered here, as
that chain would render it, byte for byte: method, peer, principal, latency_ms, code,
event, the bound context variables (the request id), level, timestamp, and trace_id and
span_id inside a span; every key is checked and every value scrubbed by the same
redaction (``sensitive_key``, ``scrub``). That skips, per call, the bound logger's copy
and the generic processor walk, which cost more than all the rest of a call's
bookkeeping. What the line says is captured as the call ends; its text is rendered and
written with the other lines of the moment (``STDOUT.write_later``), within
``FLUSH_DELAY``. Under any other configuration (the console renderer, a test's own
chain) the line goes through structlog as any other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json
import logging
import time
from json.encoder import encode_basestring_ascii
from typing import Any

import grpc
import structlog
from structlog.typing import Processor

from authority.observability.logging import (
    REDACTED,
    STDOUT,
    JsonChain,
    json_chain,
    scrub,
    sensitive_key,
)

log = structlog.get_logger("authority.rpc")

EVENT = "rpc"
# The line's keys in order. The bound context variables come after "event" (structlog's
# merge_contextvars adds what the event lacks), then the level and the timestamp.
FIELDS = ("method", "peer", "principal", "latency_ms", "code", "event", "level", "timestamp")
_OWN = frozenset(FIELDS[:6])

# Who the call authenticated, for the line. Code that learns it may set it; the call
# wrapper otherwise derives it (the admin credential, or the ``sub`` of the token
# Issue/Refresh just minted).
principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authority_principal", default=None
)

MINTING = frozenset({"/authority.v1.TokenService/Issue", "/authority.v1.TokenService/Refresh"})


def minted_subject(response: Any) -> str | None:
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


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status of a call that ended with ``error`` (not an abort)."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):  # the caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# The JSON chain the line may be rendered for directly, if it is in effect.
chain = json_chain


def enabled(current: JsonChain | None) -> bool:
    """Whether the line will be written: skip gathering it (peer, principal) otherwise."""
    if current is not None:
        return current.info
    check = getattr(log, "is_enabled_for", None)
    return True if check is None else bool(check(logging.INFO))


class _Timestamps:
    """``TimeStamper(fmt="iso", utc=True)``'s text, its date and time formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, now_ns: int) -> str:
        second, nanoseconds = divmod(now_ns, 1_000_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micro = nanoseconds // 1000
        # datetime.isoformat leaves out a zero fraction.
        return f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"


_TIMESTAMPS = _Timestamps()
_OK = grpc.StatusCode.OK
_time_ns = time.time_ns
_write_later = STDOUT.write_later
_PEERS: dict[str, str] = {}  # peer -> its scrubbed JSON text (peers repeat per connection)
_MAX_PEERS = 4096


def _string(value: str) -> str:
    return encode_basestring_ascii(scrub(value))


def _peer(peer: str) -> str:
    text = _PEERS.get(peer)
    if text is None:
        if len(_PEERS) >= _MAX_PEERS:
            _PEERS.clear()
        text = _PEERS[peer] = _string(peer)
    return text


_KEYS: dict[str, str] = {}  # key -> its rendered name and ": ", or the redacted pair


def _pair(key: str, value: Any) -> str | None:
    """``"key": value`` as the chain renders it; None for a value (not a string or
    None) it would render through a fallback: the chain then renders the whole line."""
    name = _KEYS.get(key)
    if name is None:
        name = _KEYS[key] = (
            f"{encode_basestring_ascii(key)}: {encode_basestring_ascii(REDACTED)}"
            if sensitive_key(key)
            else f"{encode_basestring_ascii(key)}: "
        )
    if name[-2:] != ": ":
        return name
    if isinstance(value, str):
        return name + _string(value)
    if value is None:
        return name + "null"
    return None


# structlog's context variables, by name (one per key ever bound in this process).
_BOUND: dict[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)
_PREFIX_LENGTH = len("structlog_")
_REQUEST_ID_KEY = "request_id"
_ONLY_REQUEST_ID = "structlog_" + _REQUEST_ID_KEY


Items = tuple[tuple[str, str | None], ...]


def _context_items(request_id: str | None = None) -> Items | None:
    """The bound context variables (merge_contextvars' part of the line), captured as
    the call ends; None where only the chain can render them. ``request_id``: what the
    call bound, when that is known to be the only variable ever bound (no lookup)."""
    bound = _BOUND
    if bound is not None and len(bound) == 1:  # only ever the request id: no copy
        if request_id is not None and _ONLY_REQUEST_ID in bound:
            return ((_REQUEST_ID_KEY, request_id),)
        ((name, variable),) = bound.items()
        value = variable.get()
        items: tuple[tuple[str, Any], ...] = (
            () if value is Ellipsis else ((name[_PREFIX_LENGTH:], value),)
        )
    else:
        items = tuple(structlog.contextvars.get_contextvars().items())
    if any(key in FIELDS for key, _ in items):
        # merge_contextvars only adds what the line lacks: the line's own keys win
        items = tuple((key, value) for key, value in items if key not in _OWN)
        if any(key in FIELDS for key, _ in items):
            return None  # "level", "timestamp": the chain keeps its place, not its value
    for _, value in items:
        if value is not None and not isinstance(value, str):
            return None
    return items


def _extra_pairs(extra: tuple[Processor, ...]) -> list[str] | None:
    """The keys the chain's extra processors (trace ids) add, rendered; None: fall back."""
    if not extra:
        return []
    added: Any = {}
    for processor in extra:
        added = processor(None, "info", added)
    if not isinstance(added, dict) or any(key in FIELDS for key in added):
        return None
    pairs = [_pair(str(key), value) for key, value in added.items()]
    return None if None in pairs else [p for p in pairs if p is not None]


def _tail(extra: tuple[Processor, ...]) -> str | None:
    if not extra:
        return ""
    pairs = _extra_pairs(extra)
    return None if pairs is None else "".join(", " + pair for pair in pairs)


class RpcLine:
    """The line of one method: its constant parts rendered once. Written in two steps:
    what the line says is captured as the call ends; its text is rendered when stdout is
    flushed (``STDOUT.write_later``), with the other lines of that moment."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._method = f'"method": {_string(method)}, "peer": '
        self._text = self.text  # bound once: write() hands it over on every call

    def write(
        self,
        current: JsonChain | None,
        *,
        peer: str,
        who: str | None,
        elapsed: float,
        code: grpc.StatusCode,
        request_id: str | None = None,
    ) -> None:
        """Write the line (``current``: the chain in effect when the call started;
        ``request_id``: the one the call bound, if it bound one)."""
        latency_ms = round(elapsed * 1000, 3)
        if current is not None:
            items = _context_items(request_id)
            tail = _tail(current.extra) if current.extra else ""
            if items is not None and tail is not None:
                name = "OK" if code is _OK else code.name  # .name is a descriptor call
                fields = (items, peer, who, latency_ms, name, _time_ns(), tail)
                _write_later(self._text, fields)
                return
        log.info(
            EVENT,
            method=self.method,
            peer=peer,
            principal=who,
            latency_ms=latency_ms,
            code=code.name,
        )

    def render(
        self,
        chain: JsonChain,
        *,
        peer: str,
        who: str | None,
        latency_ms: float,
        code: str,
        now_ns: int,
    ) -> str | None:
        """The line, newline included, as ``chain`` would render it now; None where
        only the chain can (a context variable that is not a string)."""
        items = _context_items()
        tail = _tail(chain.extra)
        if items is None or tail is None:
            return None
        return self.text(items, peer, who, latency_ms, code, now_ns, tail)

    def text(  # noqa: PLR0917 - called with the captured tuple
        self,
        items: Items,
        peer: str,
        who: str | None,
        latency_ms: float,
        code: str,
        now_ns: int,
        tail: str,
    ) -> str:
        if len(items) == 1:  # the request id, as a rule
            ((key, value),) = items
            bound = f", {_pair(key, value)}"
        else:
            bound = "".join([f", {_pair(key, value)}" for key, value in items])
        principal_text = "null" if who is None else _string(who)
        return (
            f"{{{self._method}{_peer(peer)}, "
            f'"principal": {principal_text}, "latency_ms": {latency_ms!r}, '
            f'"code": "{code}", "event": "rpc"{bound}, "level": "info", '
            f'"timestamp": "{_TIMESTAMPS.iso(now_ns)}"{tail}}}\n'
        )
