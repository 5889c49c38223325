"""The one parser of bearer credentials and request ids (authority.domain.call_metadata)."""

from __future__ import annotations

import pytest

from authority.domain.call_metadata import (
    MAX_REQUEST_ID,
    bearer_credential,
    bearer_token,
    request_id,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer", ""),  # a Bearer header without a credential: malformed, not missing
        ("Bearer a b", "a b"),
        ("Basic abc", None),
        ("", None),
    ],
)
def test_bearer_credential(header: str, expected: str | None) -> None:
    assert bearer_credential(header) == expected


def test_bearer_token_takes_the_first_non_empty_bearer_entry() -> None:
    metadata = [
        ("authorization", "Basic x"),
        ("authorization", "Bearer "),
        ("authorization", "Bearer t"),
    ]
    assert bearer_token(metadata) == "t"
    assert bearer_token([("x-other", "Bearer t")]) is None
    assert bearer_token(None) is None
    assert bearer_token([("authorization", b"Bearer t")]) is None  # binary metadata


def test_request_id_is_cut_and_printable() -> None:
    assert request_id([("x-request-id", "abc")]) == "abc"
    assert request_id([("x-request-id", "a\nb\x00c")]) == "abc"
    assert request_id([("x-request-id", "x" * 500)]) == "x" * MAX_REQUEST_ID
    assert request_id([("x-request-id", "\n\n")]) is None
    assert request_id(()) is None
