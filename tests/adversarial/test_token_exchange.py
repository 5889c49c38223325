"""Attacks on RFC 8693 token exchange (/oauth2/token and gRPC Issue share one implementation):
subject tokens that are forged, from another authority, expired, or not meant for the client
presenting them; tokens that would outlive or shed what they were exchanged from."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from authority.v1 import admin_pb2, token_pb2
from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import GRANTS, PASSWORD, make_client, make_principal, payload
from tests.integration.test_token_exchange import (
    ACCESS,
    EXCHANGE,
    GATEWAY_GRANTS,
    exchange,
    gateway,
    login,
    own_token,
)

StartServer = Callable[..., ServerProcess]


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(status: int, answer: dict[str, object]) -> bool:
    return status == 400 and answer.get("error") == "invalid_grant"


def test_forged_and_unsigned_subject_tokens_are_refused(server: ServerProcess) -> None:
    secret = gateway(server)
    make_principal(server)
    bob = make_principal(server, "bob")
    subject = login(server, "gateway", secret)
    header, _, signature = subject.split(".")
    # alice's signature over a payload naming bob.
    swapped = ".".join((header, _b64({**payload(subject), "sub": bob}), signature))
    assert refused(*exchange(server, "gateway", secret, swapped))
    unsigned = ".".join((_b64({"alg": "none", "typ": "at+jwt"}), _b64(payload(subject)), ""))
    assert refused(*exchange(server, "gateway", secret, unsigned))
    assert refused(*exchange(server, "gateway", secret, "not-a-token"))


def test_a_token_of_another_authority_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    ours = start_server(tmp_path / "ours")
    theirs = start_server(tmp_path / "theirs")
    # The same client id, secret-holding setup and principal name on both.
    secrets = {server.http: gateway(server) for server in (ours, theirs)}
    for server in (ours, theirs):
        make_principal(server)
    foreign = login(theirs, "gateway", secrets[theirs.http])
    assert payload(foreign)["client_id"] == "gateway"
    assert refused(*exchange(ours, "gateway", secrets[ours.http], foreign))


def test_a_client_cannot_exchange_a_token_never_meant_for_it(server: ServerProcess) -> None:
    secret = gateway(server)
    mallory = make_client(
        server,
        "mallory",
        (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS, GRANTS.GRANT_TYPE_TOKEN_EXCHANGE),
        audiences=("default", "orders"),
    )
    make_principal(server)
    # Issued to gateway, for the default audience: nothing about it names mallory.
    subject = login(server, "gateway", secret)
    assert refused(*exchange(server, "mallory", mallory, subject))
    # Nor may mallory pass off gateway's own token as the actor.
    mine = own_token(server, "mallory", mallory)
    their_actor = own_token(server, "gateway", secret)
    status, answer = exchange(
        server, "mallory", mallory, mine, actor_token=their_actor, actor_token_type=ACCESS
    )
    assert refused(status, answer)
    # Nor exchange its own client-credentials token for a principal's token (no principal).
    assert refused(*exchange(server, "mallory", mallory, mine))
    # gateway itself may: the rule is about who the token was issued to or for.
    assert exchange(server, "gateway", secret, subject)[0] == 200


def test_an_expired_subject_token_is_refused(start_server: StartServer) -> None:
    server = start_server(AUTHORITY_LEEWAY="0s")
    with server.client() as admin:
        secret = admin.create_client(
            admin_pb2.Client(
                id="gateway",
                confidential=True,
                grant_types=list(GATEWAY_GRANTS),
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
                access_token_ttl=Duration(seconds=1),
            )
        ).client_secret
    make_principal(server)
    subject = login(server, "gateway", secret, scope="read")
    with server.client(admin=False) as client:
        deadline = time.monotonic() + 30
        while client.verify(subject).result != token_pb2.VERIFY_RESULT_EXPIRED:
            assert time.monotonic() < deadline, "the 1 s token never expired"
            time.sleep(0.2)
    assert refused(*exchange(server, "gateway", secret, subject))


def test_the_issued_token_never_outlives_its_subject_token(server: ServerProcess) -> None:
    with server.client() as admin:
        short = admin.create_client(
            admin_pb2.Client(
                id="web",
                confidential=True,
                grant_types=[GRANTS.GRANT_TYPE_PASSWORD],
                audiences=["api"],
                scopes=["read"],
                default_scopes=["read"],
                access_token_ttl=Duration(seconds=60),
            )
        ).client_secret
        long = admin.create_client(
            admin_pb2.Client(
                id="api",
                confidential=True,
                grant_types=[GRANTS.GRANT_TYPE_TOKEN_EXCHANGE],
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
                access_token_ttl=Duration(seconds=600),
            )
        ).client_secret
    make_principal(server)
    subject = login(server, "web", short, scope="read")  # for `api`, 60 s
    status, answer = exchange(server, "api", long, subject)
    assert status == 200, answer
    assert payload(str(answer["access_token"]))["exp"] <= payload(subject)["exp"]  # type: ignore[operator]
    assert int(answer["expires_in"]) <= 60  # type: ignore[call-overload]


def test_exchanging_again_without_an_actor_keeps_the_delegation_chain(
    server: ServerProcess,
) -> None:
    secret = gateway(server)
    make_principal(server)
    subject = login(server, "gateway", secret)
    actor = own_token(server, "gateway", secret)
    status, delegated = exchange(
        server, "gateway", secret, subject, actor_token=actor, actor_token_type=ACCESS
    )
    assert status == 200, delegated
    status, again = exchange(server, "gateway", secret, str(delegated["access_token"]))
    assert status == 200, again
    assert payload(str(again["access_token"]))["act"] == {"sub": "gateway", "client_id": "gateway"}


def test_a_subject_token_from_before_a_password_change_is_refused(server: ServerProcess) -> None:
    secret = gateway(server)
    make_principal(server)
    subject = login(server, "gateway", secret)
    with server.client() as admin:
        admin.set_password("alice", PASSWORD + " changed")
    assert refused(*exchange(server, "gateway", secret, subject))


def test_the_grant_type_is_spelled_exactly(server: ServerProcess) -> None:
    secret = gateway(server)
    make_principal(server)
    subject = login(server, "gateway", secret)
    from tests.integration.test_oauth_http import basic, request  # noqa: PLC0415

    form = {
        "grant_type": EXCHANGE.upper(),
        "subject_token": subject,
        "subject_token_type": ACCESS,
    }
    answer = request(server.http + "/oauth2/token", form, headers=basic("gateway", secret))
    assert answer.status == 400 and answer.json()["error"] == "unsupported_grant_type"
