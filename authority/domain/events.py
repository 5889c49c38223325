"""Domain events: what happened to which aggregate, by whom, from where.

Every security-relevant change writes an ``Event`` to the outbox in the same
transaction as the change itself, so the audit trail can never disagree with the
state: a rolled-back change leaves no event, and a committed one always has its
event. Events are relayed afterwards (``authority.services.outbox``).

``data`` is JSON-safe and never carries a secret: no password, password hash,
token, refresh-token hash or client secret ever goes into an event (the outbox is
read by consumers, and possibly by third parties through webhooks). Identifiers
(principal ids, client ids, session ids, kids, token ids) are fine.

Who and where come from the request being served: the API layer binds a
``RequestContext`` (``bind_request``) and ``new_event`` reads it, so services do
not have to thread the caller's address and request id through every call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from authority.domain.identifiers import random_hex

# Aggregate types.
PRINCIPAL = "principal"
CLIENT = "client"
SESSION = "session"
TOKEN = "token"
REVOCATION = "revocation"
KEY = "key"

SYSTEM_ACTOR = "system"
"""The actor of changes made by the authority itself (scheduled key rotation)."""

# Keys that may never appear in an event's data, whatever the caller passes: a last
# line of defence behind the services, which put no secrets there in the first place.
_FORBIDDEN_KEYS = frozenset(
    {
        "password",
        "password_hash",
        "secret",
        "secret_hash",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "token_hash",
        "private_key",
        "wrapped_private_key",
    }
)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked, from where, under which request id; bound per RPC by the API layer."""

    actor: str = SYSTEM_ACTOR
    source_address: str = ""
    request_id: str = ""


_SYSTEM = RequestContext()
_REQUEST: ContextVar[RequestContext | None] = ContextVar("authority_request", default=None)


def current_request() -> RequestContext:
    """The request being served by this task (a system context outside any RPC)."""
    return _REQUEST.get() or _SYSTEM


def bind_request(context: RequestContext) -> None:
    """Bind ``context`` for the rest of the current task (each RPC runs in its own task)."""
    _REQUEST.set(context)


def set_actor(actor: str) -> None:
    """Name the caller once it is known (after authentication), keeping address and id."""
    _REQUEST.set(replace(current_request(), actor=actor))


_MS_MASK = (1 << 48) - 1


def new_event_id() -> str:
    """``ev_`` and 24 hex digits: the millisecond (48 bits), then 48 random bits.

    Time first, so ids created close together sort together: every event's id is a key
    of the outbox's and the audit log's unique indexes, and a random key lands each
    insert on a different index page, which a commit then writes whole (SQLite's WAL,
    PostgreSQL's full-page writes). Still unique (48 random bits per millisecond) and
    not a secret: events are audit records."""
    return f"ev_{time.time_ns() // 1_000_000 & _MS_MASK:012x}{random_hex(6)}"


def _data_json(data: Mapping[str, Any]) -> str:
    """The stored form of an event's data: sorted, compact JSON."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _json_safe(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """Refuse secrets by key, and anything that is not plain JSON (a bug, not an input);
    the data and its stored form, encoded once (the check is the encoding)."""
    forbidden = sorted(_FORBIDDEN_KEYS & set(data))
    if forbidden:
        raise ValueError(f"event data may not carry secrets: {', '.join(forbidden)}")
    copy = dict(data)
    # Raises TypeError/ValueError for anything else.
    text = json.dumps(copy, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return MappingProxyType(copy), text


@dataclass(frozen=True, slots=True)
class Event:
    """One fact, immutable. ``id`` is unique, so consumers deduplicate on it."""

    id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    actor: str
    source_address: str
    request_id: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # ``data`` as stored, when whoever made the event already encoded it ("": not yet).
    data_text: str = field(default="", compare=False, repr=False)

    def data_json(self) -> str:
        return self.data_text or _data_json(dict(self.data))


def new_event(
    type: str,
    aggregate_type: str,
    aggregate_id: str,
    *,
    at: datetime,
    data: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> Event:
    """An event stamped with the current request's actor, address and id."""
    if at.utcoffset() is None:
        raise ValueError("event times must be timezone-aware")
    request = current_request()
    safe, text = _json_safe(data or {})
    return Event(
        id=new_event_id(),
        type=type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        occurred_at=at,
        actor=actor if actor is not None else request.actor,
        source_address=request.source_address,
        request_id=request.request_id,
        data=safe,
        data_text=text,
    )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event as stored in the outbox: with its commit-order sequence number."""

    sequence: int
    event: Event


def entry_to_json(entry: OutboxEntry) -> bytes:
    """The wire form of a relayed event (Redis Streams, webhooks): plain JSON."""
    event = entry.event
    return json.dumps(
        {
            "sequence": entry.sequence,
            "id": event.id,
            "type": event.type,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "occurred_at": event.occurred_at.isoformat(),
            "actor": event.actor,
            "source_address": event.source_address,
            "request_id": event.request_id,
            "data": dict(event.data),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def entry_from_json(raw: bytes) -> OutboxEntry:
    """The inverse of ``entry_to_json``; KeyError, TypeError or ValueError if malformed."""
    message = json.loads(raw)
    occurred_at = datetime.fromisoformat(message["occurred_at"])
    if occurred_at.utcoffset() is None:
        raise ValueError("occurred_at has no offset")
    sequence = message["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise ValueError("sequence is not an integer")
    fields = ("id", "type", "aggregate_type", "aggregate_id", "actor", "source_address")
    if not all(isinstance(message[name], str) for name in (*fields, "request_id")):
        raise ValueError("an identifier is not a string")
    if not isinstance(message["data"], dict):
        raise ValueError("data is not an object")
    return OutboxEntry(
        sequence,
        Event(
            id=message["id"],
            type=message["type"],
            aggregate_type=message["aggregate_type"],
            aggregate_id=message["aggregate_id"],
            occurred_at=occurred_at,
            actor=message["actor"],
            source_address=message["source_address"],
            request_id=message["request_id"],
            data=MappingProxyType(message["data"]),
        ),
    )
