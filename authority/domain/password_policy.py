"""Password rules after NIST SP 800-63B: length and a blocklist, no composition rules.

Composition rules ("a digit and a symbol") push people to ``Password1!`` and do not
make guessing harder; NIST says not to impose them. What does help is a minimum
length, a generous maximum (so passphrases fit), and refusing the passwords attackers
try first: common ones and the account's own name.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from authority.domain.errors import InvalidArgument
from authority.domain.principals import normalize_password

DEFAULT_MIN_LENGTH = 8
DEFAULT_MAX_LENGTH = 1024
# NIST: verifiers SHOULD permit at least 64 characters, so passphrases are not cut off.
SMALLEST_MAX_LENGTH = 64
COMMON_PASSWORDS_RESOURCE = "common-passwords.txt"


def fold(text: str) -> str:
    """The form passwords are compared in: NFC, then case-folded (``ß`` matches ``SS``)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@cache
def load_common_passwords() -> frozenset[str]:
    """The shipped blocklist, folded; read once per process (it is ~20,000 entries)."""
    text = (
        resources.files("authority.data")
        .joinpath(COMMON_PASSWORDS_RESOURCE)
        .read_text(encoding="utf-8")
    )
    return parse_password_list(text.splitlines())


def parse_password_list(lines: Iterable[str]) -> frozenset[str]:
    """Entries of a list file: blank lines and ``#`` comment lines are skipped."""
    return frozenset(
        fold(stripped)
        for line in lines
        if (stripped := line.strip()) and not stripped.startswith("#")
    )


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """Lengths count Unicode code points after NFKC (``normalize_password``), so ``é``
    is one character however it was typed, and eight emoji are eight characters, not 32
    bytes. The form measured is the form hashed, at creation, change and login alike."""

    min_length: int = DEFAULT_MIN_LENGTH
    max_length: int = DEFAULT_MAX_LENGTH
    # Folded on construction; repr=False keeps 20,000 passwords out of logs and tracebacks.
    common: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        if self.min_length < 1:
            raise InvalidArgument("the minimum password length must be at least 1")
        if self.max_length < SMALLEST_MAX_LENGTH:
            raise InvalidArgument(
                f"the maximum password length must be at least {SMALLEST_MAX_LENGTH}"
            )
        if self.max_length < self.min_length:
            raise InvalidArgument("the maximum password length is below the minimum")
        if any(fold(word) != word for word in self.common):
            object.__setattr__(self, "common", frozenset(fold(word) for word in self.common))

    @classmethod
    def default(cls, min_length: int = DEFAULT_MIN_LENGTH) -> PasswordPolicy:
        """The policy with the shipped common-password list; built once per minimum
        length and shared (it is immutable), so calling this per request costs nothing."""
        if cls is PasswordPolicy:
            return _default_policy(min_length)
        return cls(min_length=min_length, common=load_common_passwords())

    def check(self, password: str, *, context: Sequence[str] = ()) -> str:
        """Raise InvalidArgument if the password is unacceptable, else return the
        normalised password (the form to hash). ``context`` holds words specific to the
        account (its name, the service's name) that must not be the password. Messages
        say what to change and never repeat the password."""
        normalized = normalize_password(password)
        length = len(normalized)
        if length < self.min_length:
            raise InvalidArgument(f"the password must have at least {self.min_length} characters")
        if length > self.max_length:
            raise InvalidArgument(f"the password must have at most {self.max_length} characters")
        folded = fold(normalized)
        if folded in self.common:
            raise InvalidArgument(
                "the password is on a list of commonly used passwords; choose another one"
            )
        if any(word and folded == fold(word) for word in context):
            raise InvalidArgument(
                "the password must not be the same as the account name or other account details"
            )
        return normalized


@cache
def _default_policy(min_length: int) -> PasswordPolicy:
    return PasswordPolicy(min_length=min_length, common=load_common_passwords())
