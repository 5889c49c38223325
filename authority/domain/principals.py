"""Principals: the parties tokens are issued to, and the canonical forms of their names
and passwords.

A name has three forms. The *display* name is what the admin typed (NFC), kept for
people. The *canonical* name (Unicode NFKC_Casefold) is the identity: ``Alice``,
``ＡＬＩＣＥ`` and ``𝐚𝐥𝐢𝐜𝐞`` are one principal; uniqueness, lookup, rate limits and
lockout all use it. The *skeleton* (UTS #39, with accents removed) is what a name looks
like: a new name whose skeleton equals an existing one's (``аlice`` with a Cyrillic
``а``, ``a1ice``, ``alicé``) is refused, and so is a new name that mixes scripts.

The Unicode data comes from ICU (the reference implementation of UTS #39), so no
confusables table is kept here. Passwords are normalised with NFKC (NIST SP 800-63B
5.1.1.2) before any length check or hashing, the same way at creation, change and login.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import icu

from authority.domain.errors import InvalidArgument

MAX_NAME_LENGTH = 256
# NFKC_Casefold can expand a character (U+FDFA becomes 18); a generous bound on the
# canonical form keeps index keys small whatever the input.
MAX_CANONICAL_NAME_LENGTH = 4 * MAX_NAME_LENGTH
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# Bounds the normalisation work on a password before its length can be judged. NFKC
# never shrinks text by this much, so no acceptable password is cut off by it.
MAX_RAW_PASSWORD_LENGTH = 8 * MAX_PASSWORD_LENGTH
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


@dataclass(frozen=True, slots=True)
class Principal:
    """A principal as stored. ``password_hash`` is an argon2id PHC string, never a password.

    ``name`` is the display form; the store derives the canonical name and the skeleton
    from it (``canonical_name``, ``name_skeleton``).

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


@cache
def _casefold_normalizer() -> Any:
    return icu.Normalizer2.getNFKCCasefoldInstance()


@cache
def _spoof_checker() -> Any:
    """ICU's checks: restriction level "highly restrictive" (one script, or Latin with
    the Han-based combinations of CJK writing), invisible characters, mixed digit systems,
    hidden overlays (``i`` + combining dot), and characters limited to the UTS #39
    General Security Profile for identifiers (Identifier_Status=Allowed: no small
    capitals, click letters, symbols or emoji) plus printable ASCII, so e-mail addresses
    and names with spaces or apostrophes remain possible."""
    checker = icu.SpoofChecker()
    allowed = icu.UnicodeSet()
    allowed.addAll(checker.getRecommendedUnicodeSet())
    allowed.addAll(checker.getInclusionUnicodeSet())
    allowed.add(" ", "~")
    allowed.freeze()
    checker.setAllowedUnicodeSet(allowed)
    return checker


def canonical_name(name: str) -> str:
    """The identity of a name: Unicode NFKC_Casefold (as computed by ICU) of the name's
    upper case.

    Total (never raises) and idempotent, so it serves stored names, lookups and the
    migration alike. Width, compatibility forms (ligatures, mathematical letters), case
    and default-ignorable characters all fold away."""
    folded = str(_casefold_normalizer().normalize(name))
    # Case folding keeps a few letters whose upper case folds to another letter (dotless
    # ``ı`` folds to itself, its upper case ``I`` to ``i``): fold the upper case too, so
    # any change of case, in either direction, is the same name.
    upper = str(icu.UnicodeString(folded).toUpper(icu.Locale.getRoot()))
    return str(_casefold_normalizer().normalize(upper))


def name_skeleton(name: str) -> str:
    """What a name looks like, for refusing confusable new names (never for lookup): the
    UTS #39 skeleton of the name with non-spacing marks removed, then case-folded.

    The skeleton is taken before case folding because confusability depends on case
    (``I`` looks like ``l``, ``0`` like ``O``); folding afterwards makes the comparison
    ignore case like every other comparison of names. Names differing only by accents,
    by look-alike letters or digits, or by case share a skeleton."""
    decomposed = str(icu.Normalizer2.getNFDInstance().normalize(name))
    bare = "".join(
        c for c in decomposed if icu.Char.charType(c) != icu.UCharCategory.NON_SPACING_MARK
    )
    return canonical_name(str(_spoof_checker().getSkeleton(0, bare)))


def validate_name(name: str) -> str:
    """Return the NFC display form of a name, or raise InvalidArgument saying what is
    wrong. Applies to any name given to the service (new or looked up)."""
    normalized = unicodedata.normalize("NFC", name)
    if not normalized:
        raise InvalidArgument("the principal name is empty")
    if len(normalized) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"the principal name is longer than {MAX_NAME_LENGTH} characters")
    if normalized != normalized.strip():
        raise InvalidArgument("the principal name starts or ends with whitespace")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in normalized):
        raise InvalidArgument(
            "the principal name contains control, invisible or unassigned characters"
        )
    canonical = canonical_name(normalized)
    if not canonical.strip():
        raise InvalidArgument("the principal name is empty once normalised")
    if len(canonical) > MAX_CANONICAL_NAME_LENGTH:
        raise InvalidArgument("the principal name is too long once normalised")
    return normalized


def principal_key(name: str) -> str:
    """The canonical name a request's name designates (for lookup, limits and lockout)."""
    return canonical_name(validate_name(name))


def validate_new_name(name: str) -> str:
    """``validate_name`` plus the rules for names being created: one script (no
    mixed-script look-alikes), no invisible or overlaid marks, one digit system, single
    spaces. Existing names are never re-judged by these rules (they still log in)."""
    normalized = validate_name(name)
    canonical = canonical_name(normalized)
    if canonical != canonical.strip() or "  " in canonical:
        raise InvalidArgument("the principal name has leading, trailing or repeated spaces")
    if _spoof_checker().check(canonical) != 0:
        raise InvalidArgument(
            "the principal name mixes scripts or digit systems, or has characters that are "
            "not allowed in identifiers (symbols, invisible or look-alike letters); use "
            "letters and digits of one script"
        )
    return normalized


def normalize_password(password: str) -> str:
    """The form a password is measured and hashed in (NFKC), so every way of typing the
    same characters is the same password. Raises InvalidArgument past a raw bound."""
    if len(password) > MAX_RAW_PASSWORD_LENGTH:
        raise InvalidArgument(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return unicodedata.normalize("NFKC", password)


def validate_password(password: str, *, min_length: int = MIN_PASSWORD_LENGTH) -> str:
    """Length rules of NIST SP 800-63B on the normalised password, which is returned."""
    normalized = normalize_password(password)
    length = len(normalized)
    if length < min_length:
        raise InvalidArgument(f"the password must have at least {min_length} characters")
    if length > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return normalized
