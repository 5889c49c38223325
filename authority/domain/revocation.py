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


@dataclass(frozen=True, slots=True)
class Revocation:
    """``value`` of ``kind`` is revoked for tokens issued at or before ``issued_before``;
    the entry is useless, and dropped, after ``expires_at``."""

    kind: RevocationKind
    value: str
    issued_before: float
    expires_at: float


class RevocationSet:
    """jti and sid revocations cover every token that carries them; subject and client
    revocations are not-before times that reject tokens issued before them."""

    def __init__(self) -> None:
        self._entries: dict[tuple[RevocationKind, str], Revocation] = {}
        self._expiry: list[tuple[float, RevocationKind, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, revocation: Revocation) -> None:
        key = (revocation.kind, revocation.value)
        current = self._entries.get(key)
        if current is not None:
            revocation = Revocation(
                revocation.kind,
                revocation.value,
                max(current.issued_before, revocation.issued_before),
                max(current.expires_at, revocation.expires_at),
            )
        self._entries[key] = revocation
        heapq.heappush(self._expiry, (revocation.expires_at, revocation.kind, revocation.value))

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
        if not self._entries:
            return False
        entries = self._entries
        for kind, value in (
            (RevocationKind.TOKEN, claims.token_id),
            (RevocationKind.SESSION, claims.session_id),
            (RevocationKind.SUBJECT, claims.subject),
            (RevocationKind.CLIENT, claims.client_id),
        ):
            entry = entries.get((kind, value)) if value else None
            if entry is not None and claims.issued_at <= entry.issued_before:
                return True
        return False
