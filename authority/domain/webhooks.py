"""Webhook subscriptions, signatures and the retry schedule (pure, no I/O).

A receiver verifies a delivery by recomputing ``v1=HMAC-SHA256(secret, timestamp + "." +
body)`` over the raw body and the ``X-Authority-Timestamp`` header, comparing in
constant time, and refusing timestamps far from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from authority.domain.backoff import Backoff
from authority.domain.errors import InvalidArgument

TIMESTAMP_HEADER = "X-Authority-Timestamp"
SIGNATURE_HEADER = "X-Authority-Signature"
EVENT_ID_HEADER = "X-Authority-Event-Id"
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Webhook:
    """An endpoint and the event types it receives (empty: every type)."""

    id: str
    url: str
    event_types: tuple[str, ...]
    wrapped_secret: bytes
    created_at: datetime

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that failed every attempt, kept for inspection and replay."""

    id: str
    webhook_id: str
    event_id: str
    payload: bytes
    attempts: int
    last_error: str
    failed_at: datetime


MAX_EVENT_TYPES = 64
MAX_EVENT_TYPE_LENGTH = 128
_URL_SHAPE = "a webhook url is an absolute http(s) URL of at most 2048 bytes"


def validate_url(url: str) -> str:
    """The URL's form (where it may point is ``webhook_targets``' business)."""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL_LENGTH or any(
        c.isspace() or not c.isprintable() for c in url
    ):
        raise InvalidArgument(_URL_SHAPE + ", without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"{_URL_SHAPE}: {exc}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidArgument(_URL_SHAPE)
    if port == 0:
        raise InvalidArgument("a webhook url needs a port between 1 and 65535")
    if parts.username is not None or parts.password is not None:
        # It would be stored and listed in clear; the signature authenticates us instead.
        raise InvalidArgument("a webhook url must not carry credentials (user:password@)")
    return url


def validate_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated event type names (empty: every type)."""
    types = sorted({t.strip() for t in event_types if t.strip()})
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidArgument(f"at most {MAX_EVENT_TYPES} event types per webhook")
    for name in types:
        if len(name) > MAX_EVENT_TYPE_LENGTH or not name.isprintable():
            raise InvalidArgument(
                f"event types are printable names of at most {MAX_EVENT_TYPE_LENGTH} characters"
            )
    return tuple(types)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Authority-Signature`` header value."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison); freshness is the receiver's call."""
    try:
        expected = sign(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): the process's one backoff
    rule (``authority.domain.backoff``): exponential with equal jitter, uniform between
    half the ceiling and the ceiling, so endpoints that failed together are not all
    retried in the same instant, and a failing endpoint is never retried almost at once."""
    return Backoff(first=base, cap=cap).delay(attempt, rng)
