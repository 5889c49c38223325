"""Strings that become claims of a token we sign are Unicode text: a lone UTF-16 surrogate
(which Python's str and json take, but UTF-8 cannot encode) is refused with
INVALID_ARGUMENT where it comes in, so the authority never signs what its own Verify,
ext_authz and every protobuf answer could not carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from authority.domain.bounds import check_unicode
from authority.domain.claims import check_exchange_claims, validate_allowed_claims
from authority.domain.clients import Client, GrantType, clean_values, validate_client
from authority.domain.errors import InvalidArgument
from authority.domain.principals import validate_name, validate_new_name

LONE = ["\ud800", "\udfff", "a\udbffz", "\ude00\ud83d"]  # high, low, inside text, reversed


@pytest.mark.parametrize("lone", LONE)
@pytest.mark.parametrize(
    "shape",
    [
        lambda s: {"team": s},
        lambda s: {s: "blue"},
        lambda s: {"team": ["ok", s]},
        lambda s: {"profile": {"nested": [{"deeper": s}]}},
        lambda s: {"profile": {s: 1}},
    ],
    ids=["value", "name", "in a list", "deep", "nested name"],
)
def test_exchange_claims_with_a_lone_surrogate_are_invalid_argument(lone: str, shape: Any) -> None:
    with pytest.raises(InvalidArgument, match="lone UTF-16 surrogate"):
        check_exchange_claims(shape(lone))


def test_exchange_claims_in_any_other_text_pass() -> None:
    claims = {
        "team": "\U0001f600 \ud55c\uad6d jos\u00e9",  # astral, Hangul (UTF-8 opens 0xED)
        "raw": "\\ud800",  # a backslash and five letters: text, not an escape
        "n": [1, 2.5, None, True, {"k": "\u00e9"}],
    }
    assert check_exchange_claims(claims) == claims


def test_the_domain_check_takes_any_json_data() -> None:
    for value in ("plain", "\U0001f600", ["a", {"b": ("c",)}], {"k": 1}, 3, None):
        check_unicode(value, "value")
    for value in ("\ud800", ["a", ("\udc00",)], {"k": {"\udfff": 1}}):
        with pytest.raises(InvalidArgument, match=r"^value must be Unicode text"):
            check_unicode(value, "value")


def _client(**changes: Any) -> Client:
    fields: dict[str, Any] = {
        "id": "gateway",
        "secret_hash": b"x" * 32,
        "grant_types": frozenset({GrantType.TOKEN_EXCHANGE}),
        "audiences": ("default",),
        "scopes": frozenset({"read"}),
        "default_scopes": ("read",),
        "access_token_ttl": timedelta(minutes=10),
        "session_idle_ttl": timedelta(days=1),
        "session_absolute_ttl": timedelta(days=7),
        "disabled": False,
        "created_at": datetime.now(UTC),
    }
    return Client(**{**fields, **changes})


@pytest.mark.parametrize("lone", LONE)
def test_every_other_string_that_becomes_a_claim_already_refuses_one(lone: str) -> None:
    """Client ids (``client_id``), audiences (``aud``), scopes (``scope``), principal names
    (looked up, never signed: ``sub`` is a generated id) and claim names registered on a
    client: each validator refuses non-printable text, and a surrogate is not printable."""
    validate_client(_client(), max_access_ttl=timedelta(hours=1))  # the baseline passes
    with pytest.raises(InvalidArgument):
        validate_client(_client(id="gw" + lone), max_access_ttl=timedelta(hours=1))
    for what in ("audience", "scope"):
        with pytest.raises(InvalidArgument):
            clean_values(["ok", "x" + lone], what)
    for validate in (validate_name, validate_new_name):
        with pytest.raises(InvalidArgument):
            validate("alice" + lone)
    with pytest.raises(InvalidArgument):
        validate_allowed_claims(["team" + lone], [])
    with pytest.raises(InvalidArgument):
        validate_allowed_claims([], ["roles" + lone])
