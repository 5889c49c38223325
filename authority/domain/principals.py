"""Principals: the parties tokens are issued to."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from authority.domain.errors import InvalidArgument

MAX_NAME_LENGTH = 256
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """A principal as stored. ``password_hash`` is an argon2id PHC string, never a password.

    ``generation`` grows with every credential change (password, disabled, subject
    revocation); a login starts its session only under the generation it checked the
    password against. ``credentials_changed_at`` is when the last change happened: every
    token minted after it says so in its ``iat``.
    """

    id: str
    name: str
    password_hash: str
    disabled: bool
    created_at: datetime
    generation: int = 0
    credentials_changed_at: datetime | None = None


def validate_name(name: str) -> str:
    """Return the NFC-normalised name, or raise InvalidArgument saying what is wrong."""
    normalized = unicodedata.normalize("NFC", name)
    if not normalized:
        raise InvalidArgument("the principal name is empty")
    if len(normalized) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"the principal name is longer than {MAX_NAME_LENGTH} characters")
    if normalized != normalized.strip():
        raise InvalidArgument("the principal name starts or ends with whitespace")
    if any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn"} for c in normalized):
        raise InvalidArgument("the principal name contains control or unassigned characters")
    return normalized


def validate_password(password: str, *, min_length: int = MIN_PASSWORD_LENGTH) -> None:
    """Length rules of NIST SP 800-63B (the full policy arrives with the lifecycle issue)."""
    length = len(unicodedata.normalize("NFC", password))
    if length < min_length:
        raise InvalidArgument(f"the password must have at least {min_length} characters")
    if length > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
