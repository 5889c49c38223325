"""SQLite's list columns: the parsed-text memo gives exactly what parsing gives, a list
of its own to every reader, and refuses what parsing refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authority.store import codec
from authority.store.codec import MicrosCodec


@given(values=st.lists(st.text(max_size=12), max_size=6))
def test_a_memo_hit_is_what_parsing_gives(values: list[str]) -> None:
    c = MicrosCodec()
    text = c.strings(values)
    assert isinstance(text, str)
    first, second = c.read_strings(text), c.read_strings(text)
    assert first == second == json.loads(text) == values
    first.append("changed")  # each reader's list is its own
    assert c.read_strings(text) == values


def test_long_texts_are_parsed_each_time_and_bad_text_is_refused() -> None:
    c = MicrosCodec()
    long = c.strings(["x" * 600])
    assert isinstance(long, str)
    assert c.read_strings(long) == ["x" * 600]
    assert long not in codec._STRINGS
    with pytest.raises(ValueError):
        c.read_strings("[not json")


def test_the_memo_stays_bounded() -> None:
    c = MicrosCodec()
    for i in range(codec._MAX_MEMO_ENTRIES + 10):
        assert c.read_strings(f'["{i}"]') == [str(i)]
    assert len(codec._STRINGS) <= codec._MAX_MEMO_ENTRIES
