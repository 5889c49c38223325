"""Names and passwords are canonical: no spelling of an existing name is another principal,
and every way of typing a password (NFC, NFD, compatibility forms) is the same password.

Look-alikes are generated, not listed: case, width, every mathematical alphabet, Cyrillic,
Greek and other homoglyphs found by Unicode character name, combining marks at every
position, NFD, ligatures, and invisible characters at every position.
"""

from __future__ import annotations

import itertools
import sys
import unicodedata
from collections.abc import Callable, Iterator

import grpc
import pytest
from authority_client import AuthorityClient

from tests.integration.server import ServerProcess

Code = grpc.StatusCode
GENEROUS = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "100000",
    # Hundreds of creations: hashing cost is not what these tests are about.
    "AUTHORITY_ARGON2_MEMORY_KIB": "1024",
    "AUTHORITY_ARGON2_TIME_COST": "1",
}
PASSWORD = "violet tangerine orbit 42"
BASES = ("alice", "jeff.smith", "office", "zoë")

MATH_STYLES = (
    "BOLD", "ITALIC", "BOLD ITALIC", "SCRIPT", "BOLD SCRIPT", "FRAKTUR", "DOUBLE-STRUCK",
    "BOLD FRAKTUR", "SANS-SERIF", "SANS-SERIF BOLD", "SANS-SERIF ITALIC",
    "SANS-SERIF BOLD ITALIC", "MONOSPACE",
)  # fmt: skip
# Letters of other scripts that are drawn like Latin ones, by their Unicode names.
HOMOGLYPH_NAMES = {
    "a": ("CYRILLIC SMALL LETTER A", "GREEK SMALL LETTER ALPHA", "LATIN SMALL LETTER ALPHA"),
    "c": ("CYRILLIC SMALL LETTER ES", "GREEK LUNATE SIGMA SYMBOL"),
    "e": ("CYRILLIC SMALL LETTER IE", "GREEK SMALL LETTER EPSILON"),
    "f": ("LATIN SMALL LETTER LONG S",),
    "h": ("CYRILLIC SMALL LETTER SHHA", "ARMENIAN SMALL LETTER HO"),
    "i": (
        "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
        "GREEK SMALL LETTER IOTA",
        "LATIN SMALL LETTER DOTLESS I",
    ),
    "j": ("CYRILLIC SMALL LETTER JE", "GREEK LETTER YOT"),
    "l": ("DIGIT ONE", "LATIN CAPITAL LETTER I", "CYRILLIC LETTER PALOCHKA", "VERTICAL LINE"),
    "m": ("CYRILLIC SMALL LETTER EM",),
    "o": (
        "CYRILLIC SMALL LETTER O",
        "GREEK SMALL LETTER OMICRON",
        "DIGIT ZERO",
        "ARMENIAN SMALL LETTER OH",
    ),
    "s": ("CYRILLIC SMALL LETTER DZE",),
    "t": ("CYRILLIC SMALL LETTER TE",),
    "z": ("LATIN SMALL LETTER Z WITH STROKE",),
    ".": ("ONE DOT LEADER", "ARMENIAN FULL STOP"),
}
COMBINING = ("\u0301", "\u0300", "\u0308", "\u0307", "\u0327", "\u0335", "\u0338", "\u20d2")
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e")
LIGATURES = {"ff": "\ufb00", "fi": "\ufb01", "fl": "\ufb02", "ffi": "\ufb03", "st": "\ufb06"}


def _math(style: str, char: str) -> str | None:
    kind = "SMALL" if char.islower() else "CAPITAL"
    try:
        return unicodedata.lookup(f"MATHEMATICAL {style} {kind} {char.upper()}")
    except KeyError:
        return None


def _swap_each(name: str, replace: Callable[[str], list[str]]) -> Iterator[str]:
    for i, char in enumerate(name):
        for other in replace(char):
            yield name[:i] + other + name[i + 1 :]


def lookalikes(name: str) -> list[str]:
    """Spellings a person could mistake for ``name`` (``name`` itself excluded)."""
    plain = unicodedata.normalize("NFD", name)
    out: list[str] = []
    letters = [i for i, c in enumerate(name) if c.isalpha()][:6]
    for flips in itertools.product((False, True), repeat=len(letters)):
        chars = list(name)
        for i, flip in zip(letters, flips, strict=True):
            chars[i] = chars[i].upper() if flip else chars[i]
        out.append("".join(chars))
    out += [name.title(), name.upper(), name.swapcase()]
    width = {c: chr(ord(c) + 0xFEE0) for c in map(chr, range(0x21, 0x7F))}
    out.append("".join(width.get(c, c) for c in name))
    out += list(_swap_each(name, lambda c: [width[c]] if c in width else []))
    for style in MATH_STYLES:
        whole = [_math(style, c) if c.isascii() and c.isalpha() else c for c in name]
        if all(whole):
            out.append("".join(c or "" for c in whole))
        out += list(
            _swap_each(name, lambda c, s=style: [m] if c.isascii() and (m := _math(s, c)) else [])
        )
    out += list(
        _swap_each(
            name, lambda c: [unicodedata.lookup(n) for n in HOMOGLYPH_NAMES.get(c.lower(), ())]
        )
    )
    for mark in COMBINING:
        out += [name[: i + 1] + mark + name[i + 1 :] for i in range(len(name))]
    for mark in INVISIBLE:
        out += [name[:i] + mark + name[i:] for i in range(len(name) + 1)]
    for pair, ligature in LIGATURES.items():
        if pair in name:
            out.append(name.replace(pair, ligature))
    out += [plain, unicodedata.normalize("NFKD", name), plain.upper()]
    out += [name.replace("m", "rn"), name.replace("o", "0"), name.replace("l", "I")]
    out += [
        "".join(unicodedata.lookup(f"CIRCLED LATIN SMALL LETTER {c.upper()}") if c.isascii()
                and c.isalpha() else c for c in name),
        "".join(chr(0x1D00) if c == "a" else c for c in name),  # small capital A
        "".join({"i": "\u2170", "l": "\u217c"}.get(c, c) for c in name),  # roman numerals
    ]  # fmt: skip
    return sorted({v for v in out if v != name})


def _status(call: Callable[[], object]) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        assert "Traceback" not in (error.details() or "")
        return error.code()
    return None


def test_lookalikes_of_existing_names_are_refused_or_resolve_to_them(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(**GENEROUS)
    tried = refused = 0
    created: list[str] = []
    with server.client() as admin:
        ids = {base: admin.create_principal(base, PASSWORD).id for base in BASES}
        for base in BASES:
            for variant in lookalikes(base):
                tried += 1
                code = _status(lambda v=variant: admin.create_principal(v, PASSWORD))
                if code in (Code.ALREADY_EXISTS, Code.INVALID_ARGUMENT):
                    refused += 1
                else:
                    created.append(f"{variant!r} ({code}) of {base!r}")
                if _lookup(admin, variant) not in (None, ids[base]):
                    created.append(f"{variant!r} finds another principal than {base!r}")
    print(f"\nlook-alikes refused: {refused} of {tried} tried", file=sys.stderr)
    assert not created, f"{len(created)} look-alikes created: {created[:20]}"
    assert tried >= 500


def _lookup(admin: AuthorityClient, name: str) -> str | None:
    try:
        return admin.get_principal(name).id
    except grpc.RpcError as error:
        assert error.code() in (Code.NOT_FOUND, Code.INVALID_ARGUMENT), error.details()
        return None


def test_case_width_and_compatibility_spellings_log_in_as_the_same_principal(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(**GENEROUS)
    with server.client() as admin:
        alice = admin.create_principal("Alice", PASSWORD).id
        spellings = ["alice", "ALICE", "aLiCe", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "𝖺𝗅𝗂𝖼𝖾", "Ａｌｉｃｅ"]
        for spelling in spellings:
            pair = admin.issue_with_password(spelling, PASSWORD)
            assert admin.verify(pair.access_token).claims.subject == alice, spelling
            assert admin.get_principal(spelling).id == alice
        # Changing the password by another spelling changes the one principal's password.
        admin.set_password("ＡＬＩＣＥ", "new " + PASSWORD, keep_sessions=True)
        pair = admin.issue_with_password("alice", "new " + PASSWORD)
        assert admin.verify(pair.access_token).claims.subject == alice
        assert _status(lambda: admin.issue_with_password("alice", PASSWORD)) is (
            Code.UNAUTHENTICATED
        )
        assert admin.delete_principal("𝐀𝐋𝐈𝐂𝐄") is True
        assert _lookup(admin, "alice") is None


@pytest.mark.parametrize(
    ("created_with", "login_with"),
    [
        ("NFC", "NFD"),
        ("NFD", "NFC"),
        ("NFKD", "NFC"),
        ("NFC", "NFKC"),
    ],
)
def test_every_normal_form_of_a_password_logs_in(
    start_server: Callable[..., ServerProcess], created_with: str, login_with: str
) -> None:
    password = "Crème brûlée, Ångström, ﬁve ½ Ｐａｓｓ"
    server = start_server(**GENEROUS)
    with server.client() as admin:
        pid = admin.create_principal("pierre", unicodedata.normalize(created_with, password)).id  # type: ignore[arg-type]
        for form in ("NFC", "NFD", "NFKC", "NFKD", login_with):
            pair = admin.issue_with_password("pierre", unicodedata.normalize(form, password))  # type: ignore[arg-type]
            assert admin.verify(pair.access_token).claims.subject == pid, form
        admin.set_password(
            "pierre", unicodedata.normalize("NFD", "Ünïcödé pässwörd"), keep_sessions=True
        )
        pair = admin.issue_with_password("pierre", "Ünïcödé pässwörd")
        assert admin.verify(pair.access_token).claims.subject == pid


def test_a_long_password_accepted_at_creation_logs_in(
    start_server: Callable[..., ServerProcess],
) -> None:
    # 1,200 code points that normalise to 600 characters (e + combining acute), and a
    # password right at the 1,024-character limit once normalised.
    decomposed = "e\u0301" * 600
    at_limit = "\u00e9" * 1000 + "a\u030a" * 24
    server = start_server(**GENEROUS)
    with server.client() as admin:
        for name, password in (("long", decomposed), ("limit", at_limit)):
            pid = admin.create_principal(name, password).id
            pair = admin.issue_with_password(name, password)
            assert admin.verify(pair.access_token).claims.subject == pid
        over = "\u00e9" * 1025
        assert _status(lambda: admin.create_principal("over", over)) is Code.INVALID_ARGUMENT
