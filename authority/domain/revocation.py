"""The in-memory revocation view Verify consults: bounded, because every entry expires
when the last token it covers would have expired anyway."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import StrEnum

from authority.domain.tokens import AccessClaims


class RevocationKind(StrEnum):
    TOKEN = "jti"
    SESSION = "sid"
    SUBJECT = "sub"
    CLIENT = "client_id"


# A jti or a sid names tokens that are never issued again once revoked (a jti is one token;
# a revoked session refreshes no more), so their first revocation is complete: a repeat
# changes nothing and is not recorded again. Subject and client revocations are
# not-before times that a later revocation moves forward.
FINAL_KINDS = frozenset({RevocationKind.TOKEN, RevocationKind.SESSION})

# Module constants: the lookups in is_revoked_identity run on every Verify.
_TOKEN, _SESSION, _SUBJECT, _CLIENT = (
    RevocationKind.TOKEN,
    RevocationKind.SESSION,
    RevocationKind.SUBJECT,
    RevocationKind.CLIENT,
)


@dataclass(frozen=True, slots=True)
class Revocation:
    """``value`` of ``kind`` is revoked for tokens issued at or before ``issued_before``;
    the entry is useless, and dropped, after ``expires_at``."""

    kind: RevocationKind
    value: str
    issued_before: float
    expires_at: float


def whole_revocation(kind: RevocationKind, value: str, expires_at: float) -> Revocation:
    """Every token carrying ``value`` (a ``jti`` or a ``sid``), whatever its ``iat``: a
    revoked session can mint nothing more (the store refuses its refreshes), and a jti
    names one token, so these are covered by identity rather than by comparing ``iat``
    with a clock another replica read. ``issued_before`` is the entry's end of life, so
    every verifier that compares ``iat <= issued_before`` reads it the same way."""
    return Revocation(kind, value, expires_at, expires_at)


def session_revocation(session_id: str, expires_at: float) -> Revocation:
    """Every token of a session ended by a credential change (see ``whole_revocation``)."""
    return whole_revocation(RevocationKind.SESSION, session_id, expires_at)


class RevocationSet:
    """jti and sid revocations cover every token that carries them; subject and client
    revocations are not-before times that reject tokens issued before them."""

    def __init__(self) -> None:
        self._entries: dict[tuple[RevocationKind, str], Revocation] = {}
        self._expiry: list[tuple[float, RevocationKind, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, revocation: Revocation) -> bool:
        """Merge ``revocation`` in (the later ``issued_before`` and ``expires_at`` win).
        True when that changed the view: new, or widened. Polling re-reads what the
        fan-out already delivered, so followers must hear only of real changes."""
        key = (revocation.kind, revocation.value)
        current = self._entries.get(key)
        if current is not None:
            if (
                revocation.issued_before <= current.issued_before
                and revocation.expires_at <= current.expires_at
            ):
                return False
            revocation = Revocation(
                revocation.kind,
                revocation.value,
                max(current.issued_before, revocation.issued_before),
                max(current.expires_at, revocation.expires_at),
            )
        self._entries[key] = revocation
        heapq.heappush(self._expiry, (revocation.expires_at, revocation.kind, revocation.value))
        return True

    def get(self, kind: RevocationKind, value: str) -> Revocation | None:
        """The entry for ``kind``=``value`` as merged so far, if any."""
        return self._entries.get((kind, value))

    def snapshot(self, now: float | None = None) -> list[Revocation]:
        """Every entry (those still live at ``now``, when given): what a new follower needs."""
        if now is None:
            return list(self._entries.values())
        return [entry for entry in self._entries.values() if entry.expires_at > now]

    def expire(self, now: float) -> int:
        """Drop entries past their expiry; returns how many were dropped."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, value = heapq.heappop(self._expiry)
            entry = self._entries.get((kind, value))
            if entry is not None and entry.expires_at <= now:
                del self._entries[(kind, value)]
                dropped += 1
        return dropped

    def not_before(self, subject: str, client_id: str) -> float | None:
        """The latest subject or client revocation time that applies to new tokens, if any."""
        times = [
            entry.issued_before
            for entry in (
                self._entries.get((RevocationKind.SUBJECT, subject)),
                self._entries.get((RevocationKind.CLIENT, client_id)) if client_id else None,
            )
            if entry is not None
        ]
        return max(times, default=None)

    def is_revoked(self, claims: AccessClaims) -> bool:
        """Verify's hot path: nothing to look up while nothing is revoked."""
        if not self._entries:
            return False
        return self.is_revoked_identity(
            claims.token_id, claims.session_id, claims.subject, claims.client_id, claims.issued_at
        )

    def is_revoked_identity(
        self, token_id: str, session_id: str, subject: str, client_id: str, issued_at: float
    ) -> bool:
        """Whether a token with these claims is revoked; empty values match nothing. The same
        rule for Verify and for followers asking by identity (CheckRevocations)."""
        get = self._entries.get
        for key in (
            (_TOKEN, token_id),
            (_SESSION, session_id),
            (_SUBJECT, subject),
            (_CLIENT, client_id),
        ):
            entry = get(key) if key[1] else None
            if entry is not None and issued_at <= entry.issued_before:
                return True
        return False
