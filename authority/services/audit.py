"""Reading the audit log: filters and opaque page tokens over ``AuditStore.list_audit``.

Pages are keyed by the last record's sequence (keyset pagination), so a page never
repeats or skips a record however many are appended meanwhile, and each page costs
one indexed range scan however deep into the log it is.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from authority.domain.audit import MAX_PAGE_SIZE, AuditQuery, AuditRecord
from authority.domain.bounds import MAX_SEQUENCE
from authority.domain.errors import InvalidArgument
from authority.store.base import AuditStore

DEFAULT_PAGE_SIZE = 100
_TOKEN_PREFIX = "a1:"


def encode_page_token(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{sequence}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The sequence a page token continues after; InvalidArgument if it is not ours."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(text)
        sequence = int(text.removeprefix(_TOKEN_PREFIX))
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:  # int() of 5000 digits too
        raise InvalidArgument("page_token is not a token this service returned") from exc
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise InvalidArgument("page_token is not a token this service returned")
    return sequence


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: list[AuditRecord]
    next_page_token: str


class AuditLogService:
    def __init__(self, *, store: AuditStore) -> None:
        self._store = store

    async def list(
        self,
        *,
        target: str = "",
        action: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> AuditPage:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
        limit = page_size or DEFAULT_PAGE_SIZE
        records = await self._store.list_audit(
            AuditQuery(
                target_id=target,
                action=action,
                since=since,
                until=until,
                after_sequence=decode_page_token(page_token),
                limit=limit,
            )
        )
        token = encode_page_token(records[-1].event_sequence) if len(records) == limit else ""
        return AuditPage(records, token)
