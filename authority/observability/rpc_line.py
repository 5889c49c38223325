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
import math
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


def bound_variables() -> dict[str, contextvars.ContextVar[Any]] | None:
    """structlog's context variables when the request id's is among them (then, while
    it is the only one, a call's line needs no lookup: ``RpcLine.write``); else None."""
    return _BOUND if _BOUND is not None and _ONLY_REQUEST_ID in _BOUND else None


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


_TIE_MARGIN = 1e-6  # > the rounding of ``ms * 1000`` wherever the fast path is taken
_FAST_LIMIT = 2.0**30  # thousandths of a millisecond (18 minutes): ulp(2**30) is 2**-22
_INTS = [str(whole) for whole in range(1000)]
# ``repr`` of a 3-decimal fraction: ".5", ".05", ".005", ".0"
_THREE = [f"{part:03d}" for part in range(1000)]
_FRACTIONS = [".0"] + [("." + text).rstrip("0") for text in _THREE[1:]]
_DOT_THREE = ["." + text for text in _THREE]


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def latency_text(latency_ms: float) -> str:
    """``repr(round(latency_ms, 3))``, what the chain renders for the line's latency,
    without the two conversions through decimal text (``round`` with digits, ``repr``)
    that cost more than the rest of the line: from the latency in thousandths of a
    millisecond, rounded to the nearest whole one. That rounding is exact except within
    rounding error of a half (``_TIE_MARGIN``), where ``round`` decides; and ``repr`` of
    a number with at most 15 significant digits is those digits
    (``render_records`` does the same inline). Not a number and the infinities as JSON
    renders them (never a call's latency)."""
    scaled = latency_ms * 1000.0
    if 0.0 < scaled < _FAST_LIMIT:  # (not -0.0)
        whole = int(scaled)
        part = scaled - whole
        if not 0.5 - _TIE_MARGIN < part < 0.5 + _TIE_MARGIN:
            if part > 0.5:
                whole += 1
            thousands, rest = divmod(whole, 1000)
            head = _INTS[thousands] if thousands < 1000 else str(thousands)
            return head + _FRACTIONS[rest]
    rounded = round(latency_ms, 3)
    if not math.isfinite(rounded):
        return _NON_FINITE[str(rounded)]  # as json renders them
    return repr(rounded)


class OwnHead(str):
    """A line's head whose request id the server made: the id's text is its digits."""

    __slots__ = ()


class RpcLine:
    """The line of one method: its constant parts rendered once. Written in two steps:
    what the line says is captured as the call ends (one tuple, ``write``); its text is
    rendered when stdout is flushed, with the other lines of that moment
    (``render_records``: the pieces of every line joined once)."""

    def __init__(self, method: str) -> None:
        self.method = method
        # the request id alone bound (as a rule): the line's pieces joined at the flush
        self.head = '{"method": ' + _string(method) + ', "peer": '
        # the same, for a request id the server made (``new_request_id``: hex digits,
        # nothing to scrub or escape in it)
        self.own_head = OwnHead(self.head)
        # any other bound variables, and the chain's extra keys, rendered as captured
        head = '{"method": ' + _string(method).replace("%", "%%") + ', "peer": %s, '
        head += '"principal": %s, "latency_ms": %s, "code": "%s", "event": "rpc"'
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
                records.append((self.head, peer, who, elapsed * 1000, name, request_id, _time_ns()))
                due = STDOUT._flushing_on  # what STDOUT.add_record checks, inline
                if len(records) == 1 or due is None or not due.is_running():
                    STDOUT.arrange_flush()
                return
            record = self._record(current, peer, who, elapsed * 1000, name, _time_ns(), request_id)
            if record is not None:
                self._add(record)
                return
        log.info(
            EVENT,
            method=self.method,
            peer=peer,
            principal=who,
            latency_ms=round(elapsed * 1000, 3),
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


_PRINCIPAL = ', "principal": '
_LATENCY = ', "latency_ms": '
_CODE = ', "code": "'
_REQUEST_ID = '", "event": "rpc", "request_id": '
_TIMESTAMP = ', "level": "info", "timestamp": "'
_OWN_REQUEST_ID = _REQUEST_ID + '"'
_OWN_ID_END = '"' + _TIMESTAMP
_END_WHOLE = 'Z"}\n'
_NULL = "null"


def render_records(records: list[tuple[Any, ...]]) -> str:  # noqa: PLR0915 - one loop
    """The lines of captured ``records`` (``RpcLine.write``): every piece of every line
    in one list, joined once (a %-format per line scanned its whole template, and
    formatted the latency and the microseconds through generic conversions, each of
    which cost more than the joining). The latency as ``latency_text``, inline."""
    peers = _PEERS
    stamps = _TIMESTAMPS
    last_second, prefix = stamps.last
    ints, fractions, three, dot_three = _INTS, _FRACTIONS, _THREE, _DOT_THREE
    low, high = 0.5 - _TIE_MARGIN, 0.5 + _TIE_MARGIN
    pieces: list[str] = []
    add = pieces.extend
    for record in records:
        if len(record) != 7:  # bound variables or extra keys, rendered as captured
            template, peer, who, latency_ms, code, bound, now_ns, tail = record
            second, nanoseconds = divmod(now_ns, 1_000_000_000)
            if second != last_second:
                last_second, prefix = second, stamps.prefix(second)
            micro = nanoseconds // 1000
            stamp = "%s.%06dZ" % (prefix, micro) if micro else prefix + "Z"  # noqa: UP031
            who_text = _NULL if who is None else _string(who)
            latency = latency_text(latency_ms)
            line = template % (
                peers.get(peer) or _peer(peer),
                who_text,
                latency,
                code,
                bound,
                stamp,
                tail,
            )
            add((line,))
            continue
        head, peer, who, latency_ms, code, request_id, now_ns = record
        peer_text: str | None = peers.get(peer)
        if peer_text is None:
            peer_text = _peer(peer)
        # the latency: latency_text's fast path, inline
        scaled = latency_ms * 1000.0
        whole = int(scaled) if 0.0 < scaled < _FAST_LIMIT else -1
        part = scaled - whole
        if whole < 0 or low < part < high:
            whole_text, fraction = latency_text(latency_ms), ""
        else:
            if part > 0.5:
                whole += 1
            thousands, rest = divmod(whole, 1000)
            whole_text = ints[thousands] if thousands < 1000 else str(thousands)
            fraction = fractions[rest]
        if head.__class__ is OwnHead:  # our own request id: hex digits, as they are
            request_text, after_id = request_id, _OWN_ID_END
            request_id_key = _OWN_REQUEST_ID
        else:
            # the caller's: scrubbed only if it may hold a secret (might_hold_secret)
            if "_" in request_id or "eyJ" in request_id or "-----BEGIN" in request_id:
                request_id = scrub(request_id)
            request_text, after_id = _encode(request_id), _TIMESTAMP
            request_id_key = _REQUEST_ID
        second, nanoseconds = divmod(now_ns, 1_000_000_000)
        if second != last_second:
            last_second, prefix = second, stamps.prefix(second)
        micro = nanoseconds // 1000
        add(
            (
                head,
                peer_text,
                _PRINCIPAL,
                _NULL if who is None else _string(who),
                _LATENCY,
                whole_text,
                fraction,
                _CODE,
                code,
                request_id_key,
                request_text,
                after_id,
                prefix,
            )
        )
        if micro:  # datetime.isoformat leaves out a zero fraction
            thousands, rest = divmod(micro, 1000)
            add((dot_three[thousands], three[rest], _END_WHOLE))
        else:
            add((_END_WHOLE,))
    return "".join(pieces)


STDOUT.render_records = render_records
