"""How each backend stores the values the two disagree on: instants, durations, flags and
lists. Everything else (text, bytes, integers, JSON text) is stored the same way, so the
column lists and row mappers in ``rows`` serve both backends through one of these."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from authority.domain.errors import InvalidArgument

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class Codec(Protocol):
    """Python values to a backend's column values and back."""

    def instant(self, value: datetime) -> object:
        """A timezone-aware instant (a naive one is InvalidArgument)."""
        ...

    def read_instant(self, value: Any) -> datetime: ...

    def epoch(self, seconds: float) -> object:
        """Epoch seconds (revocation and lockout times), stored as an instant."""
        ...

    def read_epoch(self, value: Any) -> float: ...

    def duration(self, value: timedelta) -> object: ...

    def read_duration(self, value: Any) -> timedelta: ...

    def flag(self, value: bool) -> object: ...

    def strings(self, values: Iterable[str]) -> object:
        """A list of strings, in the given order."""
        ...

    def read_strings(self, value: Any) -> list[str]: ...


def aware(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise InvalidArgument("instants given to the store must be timezone-aware")
    return value


def micros(value: datetime) -> int:
    """Exact integer microseconds since the epoch, so no precision is lost to floats."""
    return (aware(value) - EPOCH) // MICROSECOND


def rounded_micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def json_text(value: Mapping[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces): both backends store the same text."""
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


_STRINGS: dict[str, tuple[Any, ...]] = {}
_MAX_MEMO_TEXT = 512
_MAX_MEMO_ENTRIES = 4096


class MicrosCodec:
    """SQLite: instants and durations as integer microseconds, lists as JSON text."""

    def instant(self, value: datetime) -> object:
        return micros(value)

    def read_instant(self, value: Any) -> datetime:
        return EPOCH + int(value) * MICROSECOND

    def epoch(self, seconds: float) -> object:
        return rounded_micros(seconds)

    def read_epoch(self, value: Any) -> float:
        return int(value) / 1e6

    def duration(self, value: timedelta) -> object:
        return value // MICROSECOND

    def read_duration(self, value: Any) -> timedelta:
        return int(value) * MICROSECOND

    def flag(self, value: bool) -> object:
        return int(value)

    def strings(self, values: Iterable[str]) -> object:
        return json.dumps(list(values), separators=(",", ":"))

    def read_strings(self, value: Any) -> list[str]:
        # The same few short lists (grant types, audiences, scopes) are read on every
        # Issue and Refresh: each text is parsed once, and every read gets a list of its
        # own. A memo of a pure function, keyed by the exact stored text: no verdict
        # depends on whether it was hit.
        if type(value) is not str or len(value) > _MAX_MEMO_TEXT:
            return list(json.loads(value))
        parsed = _STRINGS.get(value)
        if parsed is None:
            parsed = tuple(json.loads(value))
            if len(_STRINGS) >= _MAX_MEMO_ENTRIES:
                _STRINGS.clear()
            _STRINGS[value] = parsed
        return list(parsed)


class NativeCodec:
    """PostgreSQL: timestamptz, interval, boolean and text[] (asyncpg maps them)."""

    def instant(self, value: datetime) -> object:
        return aware(value)  # asyncpg would read a naive datetime as local time

    def read_instant(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamptz, got {type(value).__name__}")
        return value

    def epoch(self, seconds: float) -> object:
        """Rounded to the microsecond exactly like the SQLite store."""
        return EPOCH + rounded_micros(seconds) * MICROSECOND

    def read_epoch(self, value: Any) -> float:
        return micros(self.read_instant(value)) / 1e6

    def duration(self, value: timedelta) -> object:
        return value

    def read_duration(self, value: Any) -> timedelta:
        if not isinstance(value, timedelta):
            raise TypeError(f"expected an interval, got {type(value).__name__}")
        return value

    def flag(self, value: bool) -> object:
        return value

    def strings(self, values: Iterable[str]) -> object:
        return list(values)

    def read_strings(self, value: Any) -> list[str]:
        return list(value)
