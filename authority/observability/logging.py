"""Structured logs: JSON lines (or a console renderer), no secrets ever. The per-RPC
line is ``observability.rpc_line``'s.

Redaction is a processor that runs last before rendering, on every line, so it also
covers tracebacks and whatever a future call site passes by mistake. It works two ways
because either alone leaks: by key name (a password has no recognisable shape) and by
value shape (a token pasted into an error message has no telling key).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import hashlib
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import structlog._config as _structlog_config
from structlog.typing import EventDict, Processor, WrappedLogger

from authority.observability import tracing

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


# Every secret shape contains one of these: a JWT starts "eyJ", a prefixed secret has
# the "_" of its prefix, a PEM block starts "-----BEGIN". Text with none of them cannot
# match, so it skips the regular expression (most values: ids, peers, method names).
# (observability.rpc_line checks the same three inline.)
def might_hold_secret(text: str) -> bool:
    return "_" in text or "eyJ" in text or "-----BEGIN" in text


def scrub(value: Any) -> Any:
    """``value`` with every secret-shaped substring replaced, recursively."""
    if isinstance(value, str):
        return _SECRET_SHAPES.sub(_replace, value) if might_hold_secret(value) else value
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


FLUSH_DELAY = 0.1  # seconds an rpc line may wait in the stdout buffer (README: Logs)


class _Stdout:
    """stdout, one whole line per write, under one lock (lines from other threads never
    interleave). A line logged through structlog is written and flushed at once, after
    any rpc lines still pending. rpc lines (``write_later``) are rendered and written
    together, within ``FLUSH_DELAY``: a batch of lines costs one system call, and their
    rendering runs in one tight loop instead of in every call. Lines it cannot write are
    dropped: a worker whose supervisor died (its stdout a broken pipe) must still log its
    way through a clean shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[..., str], tuple[Any, ...]]] = []
        # The rpc lines' captured fields, appended without the lock by the event loop's
        # thread (``add_record``); rendered together by ``render_records`` as a batch is
        # written, after the ``write_later`` lines of the moment.
        self.records: list[tuple[Any, ...]] = []
        self.render_records: Callable[[list[tuple[Any, ...]]], str] | None = None
        # The loop a flush is due on (a test's loop may close before its timer fires).
        self._flushing_on: asyncio.AbstractEventLoop | None = None

    def write_line(self, line: str) -> None:
        with self._lock:
            self._write(line)

    def write_later(self, render: Callable[..., str], args: tuple[Any, ...]) -> None:
        """``render(*args)`` is written within ``FLUSH_DELAY`` (a timer on the running
        loop; at once where there is none), before any line written after it."""
        with self._lock:
            self._pending.append((render, args))
            due = self._flushing_on
            # A flush is already due on a loop that is running, so will run it: nothing to
            # arrange. (No get_running_loop() per line: it makes a getpid() system call.)
            if len(self._pending) > 1 and due is not None and due.is_running():
                return
        self.arrange_flush()

    def add_record(self, record: tuple[Any, ...]) -> None:
        """One rpc line's fields, rendered by ``render_records`` within ``FLUSH_DELAY``
        (the rpc line's own hot path does this inline)."""
        records = self.records
        records.append(record)
        due = self._flushing_on
        if len(records) == 1 or due is None or not due.is_running():
            self.arrange_flush()

    def arrange_flush(self) -> None:
        """A flush within ``FLUSH_DELAY`` on the running loop; at once without one."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would flush it later
            loop = None
        with self._lock:
            self._flushing_on = loop
        if loop is None:
            self.flush()
        else:
            loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        with self._lock:
            self._write("")

    def _write(self, line: str) -> None:
        """Pending lines, then ``line``, then a flush (with the lock held)."""
        pending, self._pending = self._pending, []
        text = "".join([render(*args) for render, args in pending])
        records = self.records
        if records and self.render_records is not None:
            batch = records[:]  # what the loop appends meanwhile stays, for the next batch
            del records[: len(batch)]
            text += self.render_records(batch)
        text += line
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            if text:
                sys.stdout.write(text)
            sys.stdout.flush()


STDOUT = _Stdout()
atexit.register(STDOUT.flush)  # an rpc line still buffered at exit comes out too


class _LineLogger:
    """structlog's wrapped logger: every level is one whole line on ``STDOUT``."""

    def msg(self, message: str) -> None:
        STDOUT.write_line(message + "\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _line_logger(*args: Any) -> _LineLogger:
    return _LINE_LOGGER


_LINE_LOGGER = _LineLogger()


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


@dataclass(frozen=True, slots=True)
class JsonChain:
    """What ``configure_logging`` installed, when it rendered JSON: the per-RPC line may
    then be rendered directly (``observability.rpc_line``) as this chain would have."""

    processors: list[Processor]
    extra: tuple[Processor, ...]
    info: bool  # whether info lines are written at the configured level


# structlog's configuration object: reading its processors is what get_config() does,
# without building get_config()'s dictionary on every call (json_chain runs per RPC).
_STRUCTLOG_CONFIG = getattr(_structlog_config, "_CONFIG", None)
if not hasattr(_STRUCTLOG_CONFIG, "default_processors"):
    _STRUCTLOG_CONFIG = None  # pragma: no cover - a structlog that changed its internals


class Installed:
    """What ``configure_logging`` installed (``chain``, None for the console renderer)
    and structlog's configuration object (``config``, None if its internals changed):
    the chain is in effect while ``config.default_processors is chain.processors``. The
    call wrapper checks that inline (``json_chain`` does it with a Python call)."""

    __slots__ = ("chain", "config")

    def __init__(self) -> None:
        self.chain: JsonChain | None = None
        self.config: Any = _STRUCTLOG_CONFIG


INSTALLED = Installed()


def json_chain() -> JsonChain | None:
    """The chain ``configure_logging`` installed, while it is still structlog's (None
    after anything else reconfigured structlog, or for the console renderer)."""
    chain = INSTALLED.chain
    if chain is None:
        return None
    if _STRUCTLOG_CONFIG is not None:
        configured = _STRUCTLOG_CONFIG.default_processors
    else:  # pragma: no cover - see _STRUCTLOG_CONFIG
        configured = structlog.get_config()["processors"]
    return chain if configured is chain.processors else None


class ContextBinding:
    """Binds one key in structlog's context variables, as ``bind_contextvars`` does, in
    one ``ContextVar.set`` (``bind``, structlog's variable's own ``set``) undone by one
    ``reset``; per RPC, the request id. Falls back to structlog's functions if its
    internals ever change."""

    def __init__(self, key: str) -> None:
        self._key = key
        self.bind: Callable[[Any], Any] = self._bind_through_structlog
        self.reset: Callable[[Any], Any] = self._reset_through_structlog
        self._variable: contextvars.ContextVar[Any] | None = None
        variables = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
        prefix = getattr(structlog.contextvars, "STRUCTLOG_KEY_PREFIX", None)
        if isinstance(variables, dict) and isinstance(prefix, str):
            # structlog creates a key's variable the first time it is bound.
            structlog.contextvars.reset_contextvars(
                **structlog.contextvars.bind_contextvars(**{key: None})
            )
            variable = variables.get(prefix + key)
            if isinstance(variable, contextvars.ContextVar):
                self._variable = variable
                self.bind = variable.set  # the token to hand to reset
                self.reset = variable.reset

    def get(self) -> Any:
        """The bound value; None when nothing is."""
        if self._variable is not None:
            value = self._variable.get()
        else:  # pragma: no cover - see bind
            value = structlog.contextvars.get_contextvars().get(self._key)
        return None if value is Ellipsis else value

    def _bind_through_structlog(self, value: Any) -> Any:  # pragma: no cover - see bind
        return structlog.contextvars.bind_contextvars(**{self._key: value})

    def _reset_through_structlog(self, token: Any) -> None:  # pragma: no cover - see bind
        structlog.contextvars.reset_contextvars(**token)


def configure_logging(*, fmt: str = "json", level: str = "info") -> None:
    """JSON lines on stdout with timestamp, level and event (``console`` for people)."""
    # With tracing on, lines logged inside a span carry its trace_id and span_id.
    extra = tracing.log_processors()
    chain = processors(fmt, extra=extra)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_line_logger,
        cache_logger_on_first_use=True,
    )
    INSTALLED.chain = (
        JsonChain(chain, tuple(extra), threshold <= logging.INFO) if fmt == "json" else None
    )
    # asyncpg logs every failed reconnection with a traceback while PostgreSQL is down;
    # readiness and our own Unavailable answers already say so, once.
    logging.getLogger("asyncpg").setLevel(logging.ERROR)
