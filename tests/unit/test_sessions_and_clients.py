"""The pure rules: what a presented refresh token does, and what a client may obtain."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from authority.domain.clients import Client, GrantType, authorize, validate_client
from authority.domain.errors import InvalidArgument, PermissionDenied
from authority.domain.sessions import (
    Outcome,
    RefreshRecord,
    Session,
    decide,
    successor_expiry,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
GRACE = timedelta(seconds=10)
SESSION = Session(
    id="s1",
    subject="p1",
    client_id="",
    audience=("api",),
    scope=(),
    created_at=T0,
    idle_ttl=timedelta(hours=1),
    absolute_expires_at=T0 + timedelta(days=1),
)
FRESH = RefreshRecord(b"a", "s1", issued_at=T0, expires_at=T0 + timedelta(hours=1))
CONSUMED = replace(FRESH, consumed_at=T0, successor_hash=b"b", sealed_successor=b"sealed")
SUCCESSOR = RefreshRecord(b"b", "s1", issued_at=T0, expires_at=T0 + timedelta(hours=1))


def outcome(
    record: RefreshRecord = FRESH,
    session: Session = SESSION,
    *,
    successor: RefreshRecord | None = None,
    active: bool = True,
    at: timedelta = timedelta(0),
) -> Outcome:
    return decide(
        record, session, successor=successor, principal_active=active, now=T0 + at, grace=GRACE
    ).outcome


def test_a_fresh_token_rotates() -> None:
    assert outcome() is Outcome.ROTATE


def test_a_retry_within_the_grace_window_replays() -> None:
    assert outcome(CONSUMED, successor=SUCCESSOR, at=GRACE) is Outcome.REPLAY


def test_a_retry_after_the_window_is_reuse() -> None:
    assert outcome(CONSUMED, successor=SUCCESSOR, at=GRACE + timedelta(microseconds=1)) is (
        Outcome.REUSE
    )


def test_replaying_an_older_generation_is_reuse_even_within_the_window() -> None:
    moved_on = replace(SUCCESSOR, consumed_at=T0, successor_hash=b"c", sealed_successor=b"x")
    assert outcome(CONSUMED, successor=moved_on, at=timedelta(seconds=1)) is Outcome.REUSE


def test_revoked_expired_and_disabled_sessions_are_rejected() -> None:
    revoked = replace(SESSION, revoked_at=T0)
    assert outcome(session=revoked) is Outcome.REJECT
    assert outcome(CONSUMED, revoked, successor=SUCCESSOR) is Outcome.REJECT
    assert outcome(at=timedelta(hours=1)) is Outcome.REJECT  # idle
    assert outcome(at=timedelta(days=1)) is Outcome.REJECT  # absolute
    assert outcome(active=False) is Outcome.REJECT
    assert outcome(CONSUMED, successor=SUCCESSOR, active=False) is Outcome.REJECT


def test_a_successor_never_outlives_the_session() -> None:
    late = T0 + timedelta(hours=23, minutes=30)
    assert successor_expiry(SESSION, late) == SESSION.absolute_expires_at
    assert successor_expiry(SESSION, T0) == T0 + timedelta(hours=1)


CLIENT = Client(
    id="mobile",
    secret_hash=b"",
    grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
    audiences=("api", "billing"),
    scopes=frozenset({"read", "write"}),
    default_scopes=("read",),
    access_token_ttl=timedelta(minutes=5),
    session_idle_ttl=timedelta(days=1),
    session_absolute_ttl=timedelta(days=30),
    disabled=False,
    created_at=T0,
)


def test_defaults_apply_when_nothing_is_requested() -> None:
    grant = authorize(CLIENT, GrantType.PASSWORD, audience=(), scope=())
    assert grant.audience == ("api",)
    assert grant.scope == ("read",)


def test_requests_within_policy_are_granted_without_duplicates() -> None:
    grant = authorize(
        CLIENT, GrantType.PASSWORD, audience=["billing", "billing"], scope=["write", "read"]
    )
    assert grant.audience == ("billing",)
    assert grant.scope == ("write", "read")


@pytest.mark.parametrize(
    ("grant_type", "audience", "scope", "message"),
    [
        (GrantType.CLIENT_CREDENTIALS, [], [], "may not use the client_credentials grant"),
        (GrantType.PASSWORD, ["admin"], [], "audience 'admin' is not allowed"),
        (GrantType.PASSWORD, [], ["delete"], "scope 'delete' is not allowed"),
    ],
)
def test_requests_outside_policy_are_denied_by_name(
    grant_type: GrantType, audience: list[str], scope: list[str], message: str
) -> None:
    with pytest.raises(PermissionDenied, match=message):
        authorize(CLIENT, grant_type, audience=audience, scope=scope)


def test_a_disabled_client_gets_nothing() -> None:
    with pytest.raises(PermissionDenied, match="disabled"):
        authorize(replace(CLIENT, disabled=True), GrantType.PASSWORD, audience=(), scope=())


def test_malformed_values_are_invalid_arguments() -> None:
    for bad in (["has space"], [""], ["x" * 300], ["tab\there"]):
        with pytest.raises(InvalidArgument):
            authorize(CLIENT, GrantType.PASSWORD, audience=bad, scope=())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "has space"}, "client id"),
        # `$` would match before a final newline: the id would reach tokens and headers.
        ({"id": "gateway\n"}, "client id"),
        ({"grant_types": frozenset()}, "at least one grant"),
        ({"audiences": ()}, "at least one audience"),
        ({"default_scopes": ("admin",)}, "default scopes"),
        ({"access_token_ttl": timedelta(hours=2)}, "access-token TTL"),
        ({"session_idle_ttl": timedelta(days=60)}, "idle session TTL"),
        ({"grant_types": frozenset({GrantType.CLIENT_CREDENTIALS})}, "confidential"),
    ],
)
def test_client_policies_that_cannot_work_are_refused(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate_client(replace(CLIENT, **change), max_access_ttl=timedelta(minutes=10))  # type: ignore[arg-type]
