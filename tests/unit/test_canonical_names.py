"""Properties of the name canonicalisation (authority.domain.principals), on generated names."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.domain.errors import InvalidArgument
from authority.domain.principals import (
    canonical_name,
    name_skeleton,
    normalize_password,
    principal_key,
    validate_new_name,
)
from authority.store.principal_names import MigrationRefused, backfill_principal_names

names = st.text(min_size=1, max_size=40)
latin = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x24F, categories=("L", "N", "Zs")),
    min_size=1,
    max_size=30,
)
FORMS = ("NFC", "NFD", "NFKC", "NFKD")


@given(names)
@settings(max_examples=1000)
def test_canonical_name_is_idempotent(name: str) -> None:
    once = canonical_name(name)
    assert canonical_name(once) == once
    assert canonical_name(name_skeleton(name)) == name_skeleton(name)


@given(names)
@settings(max_examples=1000)
def test_canonical_name_is_stable_across_normal_forms(name: str) -> None:
    expected = canonical_name(name)
    for form in FORMS:
        assert canonical_name(unicodedata.normalize(form, name)) == expected  # type: ignore[arg-type]


@given(st.one_of(latin, names))
@settings(max_examples=1000)
def test_canonical_name_ignores_case(name: str) -> None:
    key = canonical_name(name)
    for variant in (name.upper(), name.lower(), name.title(), name.swapcase(), name.casefold()):
        assert canonical_name(variant) == key


@given(latin)
def test_full_width_spellings_are_the_same_name(name: str) -> None:
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name)
    assert canonical_name(wide) == canonical_name(name)


@given(names)
def test_lookup_keys_are_canonical_or_refused(name: str) -> None:
    try:
        key = principal_key(name)
    except InvalidArgument:
        return
    assert key == canonical_name(key)


@given(st.text(max_size=200))
def test_password_normalisation_is_one_form_for_every_spelling(password: str) -> None:
    expected = normalize_password(password)
    for form in FORMS:
        assert normalize_password(unicodedata.normalize(form, password)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["аlice", "alicε", "pаypal", "a\u200blice", "ᴀlice", "bob😀", "a1١"]
)
def test_mixed_scripts_and_non_identifier_characters_are_refused_for_new_names(
    name: str,
) -> None:
    with pytest.raises(InvalidArgument):
        validate_new_name(name)


@pytest.mark.parametrize(
    "name", ["alice", "Zoë Ångström", "user@example.com", "o'brien", "日本語テスト", "Алиса"]
)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert validate_new_name(name) == unicodedata.normalize("NFC", name)


def test_the_backfill_refuses_names_equal_once_folded_and_keeps_lookalikes() -> None:
    with pytest.raises(MigrationRefused, match=r"p_1 \('Alice'\) and p_2 \('ＡＬＩＣＥ'\)"):
        backfill_principal_names([("p_1", "Alice"), ("p_2", "ＡＬＩＣＥ"), ("p_3", "bob")])
    keys = backfill_principal_names([("p_1", "alice"), ("p_2", "аlice"), ("p_3", "bob")])
    assert [(k.canonical_name, k.name_skeleton) for k in keys] == [
        ("alice", "alice"),
        ("аlice", None),
        ("bob", "bob"),
    ]
