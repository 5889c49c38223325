"""The NIST SP 800-63B password policy and its shipped common-password list."""

from __future__ import annotations

import gzip
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authority.domain.errors import InvalidArgument
from authority.domain.password_policy import (
    PasswordPolicy,
    load_common_passwords,
    parse_password_list,
)
from tools import make_common_passwords

POLICY = PasswordPolicy.default()


def _message(password: str, **kwargs: object) -> str:
    with pytest.raises(InvalidArgument) as caught:
        POLICY.check(password, **kwargs)  # type: ignore[arg-type]
    return caught.value.message


# -- the list ---------------------------------------------------------------------


def test_the_shipped_list_is_found_and_large() -> None:
    common = load_common_passwords()
    assert len(common) >= 10_000
    assert {"password", "123456", "qwerty", "iloveyou", "jennifer"} <= common


def test_the_list_file_is_lower_case_unique_and_has_a_provenance_header() -> None:
    text = resources.files("authority.data").joinpath("common-passwords.txt").read_text("utf-8")
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    entries = [line for line in lines if not line.startswith("#")]
    assert lines[: len(header)] == header  # comments only at the top
    assert any("Django" in line for line in header)
    assert any("License: BSD-3-Clause" in line for line in header)
    assert f"# Entries: {len(entries)} " in "\n".join(header)
    assert entries[:3] == ["123456", "123456789", "qwerty"]  # most common first
    assert len(set(entries)) == len(entries)
    assert all(e == e.strip() and e == e.lower() for e in entries)
    assert all(unicodedata.is_normalized("NFC", e) for e in entries)


def test_comment_and_blank_lines_are_not_entries() -> None:
    assert parse_password_list(["# Header: 1", "", "  ", "Hunter2", " dragon "]) == {
        "hunter2",
        "dragon",
    }


def test_the_extraction_script_is_deterministic_and_cleans(tmp_path: Path) -> None:
    raw = ["123456", "Password", "password", "#1bitch", "", "cafe\u0301"]
    raw += [f"pw{i}" for i in range(10_000)]
    source = tmp_path / "common-passwords.txt.gz"
    source.write_bytes(gzip.compress("\n".join(raw).encode()))
    outputs = []
    for name in ("a.txt", "b.txt"):
        out = tmp_path / name
        argv = [str(source), "--output", str(out), "--date", "2030-01-01"]
        assert make_common_passwords.main([*argv, "--source-version", "9.9"]) == 0
        outputs.append(out.read_text("utf-8"))
    assert outputs[0] == outputs[1]
    entries = parse_password_list(outputs[0].splitlines())
    assert entries >= {"123456", "password", "caf\u00e9"}
    assert "#1bitch" not in outputs[0]
    assert "# Entries: 10003 (dropped 1 starting with '#', 1 duplicates)" in outputs[0]
    assert "# Package: Django 9.9" in outputs[0]
    assert "# Extracted: 2030-01-01" in outputs[0]


# -- the common list and context words ----------------------------------------------


@pytest.mark.parametrize(
    "password", ["password", "12345678", "qwerty123", "PASSWORD", "PassWord", "QwErTy123"]
)
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert "common" in _message(password)


def test_short_common_passwords_are_refused_for_length_first() -> None:
    assert "at least 8" in _message("123456")
    assert "at least 8" in _message("qwerty")


def test_a_custom_list_is_folded_on_construction() -> None:
    policy = PasswordPolicy(common=frozenset({"Correct Horse", "STRASSE-STRASSE"}))
    for password in ("correct horse", "CORRECT HORSE", "straße-straße"):
        with pytest.raises(InvalidArgument, match="common"):
            policy.check(password)


def test_the_account_name_is_refused_as_the_password() -> None:
    message = _message("Alice-Wonderland", context=["alice-wonderland"])
    assert "account name" in message
    with pytest.raises(InvalidArgument):
        POLICY.check("ALICE-WONDERLAND", context=["service", "Alice-Wonderland"])
    POLICY.check("Alice-Wonderland-2030", context=["Alice-Wonderland", ""])
    POLICY.check("Alice-Wonderland")  # no context: not refused


def test_context_words_compare_after_normalisation() -> None:
    with pytest.raises(InvalidArgument):
        POLICY.check("jose\u0301-garcia", context=["JOS\u00c9-GARCIA"])


# -- lengths ------------------------------------------------------------------------


def test_length_boundaries() -> None:
    policy = PasswordPolicy(min_length=10, max_length=64)
    policy.check("a" * 10)
    policy.check("a" * 64)
    with pytest.raises(InvalidArgument, match="at least 10 characters"):
        policy.check("a" * 9)
    with pytest.raises(InvalidArgument, match="at most 64 characters"):
        policy.check("a" * 65)


def test_default_lengths_are_8_and_1024() -> None:
    POLICY.check("x7Kq!v2z")
    POLICY.check("x" * 1024)
    assert "at least 8" in _message("x7Kq!v2")
    assert "at most 1024" in _message("x" * 1025)


def test_length_counts_code_points_not_bytes() -> None:
    emoji = "\U0001f512\U0001f511\U0001f40d\U0001f30a\U0001f525\U0001f308\U0001f680\U0001f3b2"
    assert len(emoji) == 8 and len(emoji.encode()) == 32
    POLICY.check(emoji)
    assert "at least 8" in _message(emoji[:7])
    policy = PasswordPolicy(max_length=64)
    policy.check("\u00e9" * 64)  # 128 bytes
    with pytest.raises(InvalidArgument, match="at most 64"):
        policy.check("\u00e9" * 65)


def test_composed_and_decomposed_accents_count_the_same() -> None:
    composed = "caf\u00e9caf"  # 7 code points
    decomposed = "cafe\u0301caf"  # 8 code points before NFC, 7 after
    assert unicodedata.normalize("NFC", decomposed) == composed
    for password in (composed, decomposed):
        with pytest.raises(InvalidArgument, match="at least 8"):
            POLICY.check(password)
    POLICY.check(composed + "\u00e9")
    POLICY.check(decomposed + "e\u0301")


# -- no composition rules --------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "lowercaseonlypassphrase",
        "        spaces count too",
        "пароль для входа в систему",
        "\u6b63\u3057\u3044\u99ac\u96fb\u6c60\u30db\u30c1\u30ad\u30b9",
    ],
)
def test_no_composition_rules(password: str) -> None:
    POLICY.check(password)


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_length": 0}, "minimum"),
        ({"min_length": -3}, "minimum"),
        ({"max_length": 63}, "at least 64"),
        ({"min_length": 100, "max_length": 99}, "below the minimum"),
    ],
)
def test_configuration_is_validated(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        PasswordPolicy(**kwargs)  # type: ignore[arg-type]


def test_operators_may_choose_other_minimums() -> None:
    PasswordPolicy(min_length=1).check("Zx")
    with pytest.raises(InvalidArgument, match="at least 15"):
        PasswordPolicy.default(min_length=15).check("fourteen chars")


def test_default_is_shared_and_does_not_dump_the_list_in_repr() -> None:
    assert PasswordPolicy.default() is PasswordPolicy.default()
    assert PasswordPolicy.default().common is load_common_passwords()
    assert repr(POLICY) == "PasswordPolicy(min_length=8, max_length=1024)"


# -- messages never echo the password --------------------------------------------------


@pytest.mark.parametrize(
    ("password", "context"),
    [
        ("Sh0rt", ()),
        ("L" * 2000, ()),
        ("password1", ()),
        ("alice-in-chains", ("Alice-In-Chains",)),
    ],
)
def test_messages_do_not_contain_the_password(password: str, context: tuple[str, ...]) -> None:
    message = _message(password, context=context)
    assert password not in message
    assert password.lower() not in message.lower()


def _messages() -> set[str]:
    probes = [("", ()), ("x" * 1025, ()), ("password", ()), ("Kq7-zv2x-99", ("Kq7-zv2x-99",))]
    return {_message(password, context=context) for password, context in probes}


@given(st.text(max_size=20), st.booleans())
def test_refusal_messages_are_fixed_texts_independent_of_the_password(
    password: str, as_context: bool
) -> None:
    """Every message is one of four fixed texts, so none can carry the password."""
    try:
        POLICY.check(password, context=[password] if as_context else [])
    except InvalidArgument as exc:
        assert exc.message in _messages()
