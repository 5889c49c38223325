"""If-None-Match by weak comparison (RFC 9110 §13.1.2), lists and ``*``."""

from __future__ import annotations

import pytest

from authority.http_conditional import none_match

ETAG = '"4f2a9c"'


@pytest.mark.parametrize(
    "header",
    [
        '"4f2a9c"',
        'W/"4f2a9c"',
        "*",
        " * ",
        '"other", W/"4f2a9c"',
        '"other",W/"4f2a9c" ,',
        ', "4f2a9c"',
        '"a", , "4f2a9c"',
    ],
)
def test_matches(header: str) -> None:
    assert none_match(header, ETAG)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        '"other"',
        'W/"other"',
        "4f2a9c",  # unquoted: not an entity-tag
        'w/"4f2a9c"',  # the weak indicator is case-sensitive
        '"4f2a9c',
        '"4f2a9c" "x"',  # two tags without a comma
        '"other", *',  # "*" is only valid alone
        '"4f2a9c"x',
    ],
)
def test_does_not_match(header: str | None) -> None:
    assert not none_match(header, ETAG)


def test_a_weak_etag_of_our_own_compares_by_its_opaque_tag() -> None:
    assert none_match('"4f2a9c"', 'W/"4f2a9c"')
