"""Refresh sessions: the pure state machine of a refresh token.

A login starts a session; every refresh consumes the presented refresh token and
issues its successor, so the chain of refresh tokens is the session. A consumed
token presented again:

- within the grace window, while its successor is still the session's newest
  token, answers the *same* successor pair (retries and concurrent refreshes from
  one client never log it out, and never fork the session);
- otherwise it is reuse: the token leaked, so the whole session is revoked.

``decide`` is a pure function of the stored records, the principal's state and
``now``; the refresh service carries out its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Session:
    """One login. ``revoked_at`` is set once and never cleared."""

    id: str
    subject: str
    client_id: str
    audience: tuple[str, ...]
    scope: tuple[str, ...]
    created_at: datetime
    idle_ttl: timedelta
    absolute_expires_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A refresh token as stored: only its SHA-256, never the token.

    ``sealed_successor`` is the successor pair encrypted under a key derived from
    this token, so only a holder of this token can replay it within the grace window.
    """

    token_hash: bytes
    session_id: str
    issued_at: datetime
    expires_at: datetime
    consumed_at: datetime | None = None
    successor_hash: bytes | None = None
    sealed_successor: bytes | None = None


class Outcome(StrEnum):
    ROTATE = "rotate"  # consume and issue the successor
    REPLAY = "replay"  # answer the successor issued a moment ago
    REUSE = "reuse"  # a consumed token came back: revoke the session
    REJECT = "reject"  # expired, revoked or disabled: refuse, change nothing


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str = ""


def successor_expiry(session: Session, now: datetime) -> datetime:
    """A refresh token lives for the idle TTL, never beyond the session's absolute end."""
    return min(now + session.idle_ttl, session.absolute_expires_at)


def decide(
    record: RefreshRecord,
    session: Session,
    *,
    successor: RefreshRecord | None,
    principal_active: bool,
    now: datetime,
    grace: timedelta,
) -> Decision:
    """What presenting ``record``'s token at ``now`` does."""
    if session.revoked_at is not None:
        return Decision(Outcome.REJECT, "the session has been revoked")
    if record.consumed_at is None:
        if now >= session.absolute_expires_at:
            return Decision(Outcome.REJECT, "the session has expired")
        if now >= record.expires_at:
            return Decision(Outcome.REJECT, "the session has expired (idle)")
        if not principal_active:
            return Decision(Outcome.REJECT, "the principal or client is disabled")
        return Decision(Outcome.ROTATE)
    in_grace = now - record.consumed_at <= grace
    successor_is_head = successor is not None and successor.consumed_at is None
    if in_grace and successor_is_head and record.sealed_successor:
        if not principal_active:
            return Decision(Outcome.REJECT, "the principal or client is disabled")
        return Decision(Outcome.REPLAY)
    return Decision(Outcome.REUSE, "refresh token reuse detected; the session has been revoked")
