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
    """``TimeStamper(fmt="iso", utc=True)``'s date and time, formatted once a second."""

    def __init__(self) -> None:
        self.last = (-1, "")  # (second, its text)

    def prefix(self, second: int) -> str:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self.last = (second, text)
        return text


_TIMESTAMPS = _Timestamps()
_OK = grpc.StatusCode.OK
_time_ns = time.time_ns
_encode = encode_basestring_ascii
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
    """The line of one method: its constant parts rendered once, as %-format templates.
    Written in two steps: what the line says is captured as the call ends (one tuple,
    ``write``); its text is rendered when stdout is flushed, with the other lines of that
    moment (``render_records``: one %-format per line)."""

    def __init__(self, method: str) -> None:
        self.method = method
        head = '{"method": ' + _string(method).replace("%", "%%") + ', "peer": %s, '
        head += '"principal": %s, "latency_ms": %r, "code": "%s", "event": "rpc"'
        # the request id alone (as a rule), its value rendered with the batch
        self._bound_id = head + ', "request_id": %s, "level": "info", "timestamp": "%s"}\n'
        # any other bound variables, and the chain's extra keys, rendered as captured
        self._bound_any = head + '%s, "level": "info", "timestamp": "%s"%s}\n'
        self._records = STDOUT.records
        self._add = STDOUT.add_record

    def write(  # noqa: PLR0917 - called positionally on every call
        self,
        current: JsonChain | None,
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
            name = "OK" if code is _OK else code.name  # .name is a descriptor call
            bound = _BOUND
            if (
                request_id is not None
                and not current.extra
                and bound is not None
                and len(bound) == 1
                and _ONLY_REQUEST_ID in bound
            ):  # only ever the request id bound, and this call's: no lookup
                records = self._records
                records.append(
                    (self._bound_id, peer, who, latency_ms, name, request_id, _time_ns())
                )
                due = STDOUT._flushing_on  # what STDOUT.add_record checks, inline
                if len(records) == 1 or due is None or not due.is_running():
                    STDOUT.arrange_flush()
                return
            record = self._record(current, peer, who, latency_ms, name, _time_ns(), request_id)
            if record is not None:
                self._add(record)
                return
        log.info(
            EVENT,
            method=self.method,
            peer=peer,
            principal=who,
            latency_ms=latency_ms,
            code=code.name,
        )

    def _record(  # noqa: PLR0917
        self,
        chain: JsonChain,
        peer: str,
        who: str | None,
        latency_ms: float,
        code: str,
        now_ns: int,
        request_id: str | None = None,
    ) -> tuple[Any, ...] | None:
        """The fields of a line whose bound variables are not the request id alone,
        those rendered now; None where only the chain can render them."""
        items = _context_items(request_id)
        tail = _tail(chain.extra)
        if items is None or tail is None:
            return None
        bound = "".join([f", {_pair(key, value)}" for key, value in items])
        return (self._bound_any, peer, who, latency_ms, code, bound, now_ns, tail)

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
        record = self._record(chain, peer, who, latency_ms, code, now_ns)
        return None if record is None else render_records([record])


def render_records(records: list[tuple[Any, ...]]) -> str:
    """The lines of captured ``records`` (``RpcLine.write``), one %-format each."""
    peers = _PEERS
    stamps = _TIMESTAMPS
    last_second, prefix = stamps.last
    lines = []
    for template, peer, who, latency_ms, code, bound, now_ns, *tail in records:
        peer_text = peers.get(peer)
        if peer_text is None:
            peer_text = _peer(peer)
        second, nanoseconds = divmod(now_ns, 1_000_000_000)
        if second != last_second:
            last_second, prefix = second, stamps.prefix(second)
        micro = nanoseconds // 1000
        # datetime.isoformat leaves out a zero fraction.
        stamp = "%s.%06dZ" % (prefix, micro) if micro else prefix + "Z"  # noqa: UP031
        who_text = "null" if who is None else _string(who)
        if tail:
            lines.append(template % (peer_text, who_text, latency_ms, code, bound, stamp, tail[0]))
            continue
        # the request id: scrubbed only if it may hold a secret (logging.might_hold_secret)
        secret = "_" in bound or "eyJ" in bound or "-----BEGIN" in bound
        request_id = _encode(scrub(bound) if secret else bound)
        lines.append(template % (peer_text, who_text, latency_ms, code, request_id, stamp))
    return "".join(lines)


STDOUT.render_records = render_records
