"""Bounds on every value an admin (or any caller) can hand us, one validator per kind.

A value outside what the code, ``datetime`` or a database can hold must be refused
where it comes in, with INVALID_ARGUMENT and a message naming the field and the
range, not fail later as INTERNAL, on every login through the client it was stored on
(an 8,000-year session lifetime overflows ``datetime``). Pure: the API layer calls
these on the values it decodes, the services on the values they store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from authority.domain.errors import InvalidArgument
from authority.jose.claims import lone_surrogate_in

# Instants: what both databases and ``datetime`` hold, with room for the arithmetic
# (expiry = instant + TTL) done on them.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
_MIN_SECONDS = int(MIN_TIME.timestamp())
_MAX_SECONDS = int(MAX_TIME.timestamp())

# Durations. A session may last up to ten years: far beyond any sane policy, far within
# what datetime and both stores hold.
MAX_SESSION_TTL = timedelta(days=3650)
MAX_DURATION_SECONDS = int(MAX_SESSION_TTL.total_seconds())

# Text.
MAX_IDENTIFIER_LENGTH = 256  # ids, names, kids, actions: ours are far shorter
MAX_REVOCATION_VALUE_LENGTH = 256  # a jti, session id, subject or client id
MAX_SECRET_LENGTH = 1024  # client secrets and refresh tokens presented to us

# Keyset positions in the audit log (a SQL bigint).
MAX_SEQUENCE = 2**63 - 1


def instant(seconds: int, nanos: int, what: str) -> datetime:
    """A protobuf Timestamp's fields as an aware datetime, if within the bounds."""
    if not 0 <= nanos <= 999_999_999 or not _MIN_SECONDS <= seconds < _MAX_SECONDS:
        raise InvalidArgument(
            f"{what} must be between {MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}"
        )
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=nanos // 1000)


def duration(seconds: int, nanos: int, what: str) -> timedelta:
    """A protobuf Duration's fields as a timedelta, if well-formed and within the bounds
    (the use decides the tighter bound: see ``check_duration``)."""
    if (
        not -999_999_999 <= nanos <= 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
        or abs(seconds) > MAX_DURATION_SECONDS
    ):
        raise InvalidArgument(
            f"{what} must be a duration of at most {MAX_DURATION_SECONDS} s"
            " (seconds and nanos of the same sign)"
        )
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def check_duration(
    value: timedelta, what: str, *, minimum: timedelta, maximum: timedelta
) -> timedelta:
    if not minimum <= value <= maximum:
        raise InvalidArgument(
            f"{what} must be between {_seconds(minimum)} s and {_seconds(maximum)} s"
        )
    return value


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


def check_text(value: str, what: str, *, max_length: int = MAX_IDENTIFIER_LENGTH) -> str:
    """A name or id used for lookups and stored: bounded, printable, no NUL (which
    PostgreSQL's text cannot hold)."""
    if len(value) > max_length:
        raise InvalidArgument(f"{what} must be at most {max_length} characters")
    if not value.isprintable():
        raise InvalidArgument(f"{what} must not contain control characters")
    return value


def check_unicode(value: Any, what: str) -> None:
    """Refuse a string that is not Unicode text, alone or anywhere in JSON data (names
    included): one holding a lone UTF-16 surrogate. Python's str and json take one, but
    it cannot be encoded as UTF-8, so a token carrying it could never be answered over
    protobuf, and RFC 7493 (I-JSON) forbids it in a JWT anyway."""
    if lone_surrogate_in(value):
        raise InvalidArgument(
            f"{what} must be Unicode text: a string holds a lone UTF-16 surrogate, "
            "which cannot be encoded as UTF-8"
        )


def check_revocation_value(value: str, what: str) -> str:
    """What a revocation names is an id we issued (jti, session, subject, client): short.
    The bound also keeps every WatchRevocations message far below the message limit."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    return check_text(value, what, max_length=MAX_REVOCATION_VALUE_LENGTH)


def check_secret_length(value: str, what: str) -> str:
    """Presented secrets are compared by digest; only their size is bounded here."""
    if len(value) > MAX_SECRET_LENGTH:
        raise InvalidArgument(f"{what} must be at most {MAX_SECRET_LENGTH} characters")
    return value


def check_page_size(value: int, *, maximum: int, default: int) -> int:
    if not 0 <= value <= maximum:
        raise InvalidArgument(f"page_size must be between 0 and {maximum}")
    return value or default
