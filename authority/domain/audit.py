"""The audit log's records and queries: one append-only row per relayed event.

The audit log is a read model of the outbox: a consumer turns each event into an
``AuditRecord`` (``record_from_event``) and appends it, keyed by the event id, so
at-least-once delivery never records an event twice. Records are ordered by the
event's outbox sequence, which is the order the changes committed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from authority.domain.events import OutboxEntry

RESULT_SUCCESS = "success"
RESULT_FAILURE = "failure"

# Event types that record a refused attempt rather than a change.
_FAILURES = frozenset({"login.failed", "login.throttled", "session.refresh_reuse_detected"})

MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who (actor) did what (action) to which target, from where, and how it ended."""

    event_sequence: int
    event_id: str
    action: str
    actor: str
    target_type: str
    target_id: str
    source_address: str
    request_id: str
    result: str
    occurred_at: datetime
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters (all optional, combined with AND) and a keyset page: records with a
    sequence above ``after_sequence``, at most ``limit`` of them."""

    target_id: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None
    after_sequence: int = 0
    limit: int = 100


def record_from_event(entry: OutboxEntry) -> AuditRecord:
    event = entry.event
    return AuditRecord(
        event_sequence=entry.sequence,
        event_id=event.id,
        action=event.type,
        actor=event.actor,
        target_type=event.aggregate_type,
        target_id=event.aggregate_id,
        source_address=event.source_address,
        request_id=event.request_id,
        result=RESULT_FAILURE if event.type in _FAILURES else RESULT_SUCCESS,
        occurred_at=event.occurred_at,
        data=event.data,
    )
