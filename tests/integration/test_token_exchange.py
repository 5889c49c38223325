"""RFC 8693 token exchange against a real server, over HTTP (/oauth2/token) and gRPC (Issue
with TokenExchangeGrant's subject_token): one implementation behind both. A confidential
client trades a principal's access token (maybe with an actor token) for a narrower one."""

from __future__ import annotations

import grpc
import pytest

from authority.v1 import token_pb2
from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import (
    GRANTS,
    PASSWORD,
    basic,
    make_client,
    make_principal,
    payload,
    request,
)

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
GATEWAY_GRANTS = (
    GRANTS.GRANT_TYPE_PASSWORD,
    GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,
    GRANTS.GRANT_TYPE_TOKEN_EXCHANGE,
)


def gateway(server: ServerProcess, client_id: str = "gateway") -> str:
    """A confidential client that logs users in, acts for itself and exchanges."""
    return make_client(server, client_id, GATEWAY_GRANTS, audiences=("default", "orders"))


def login(server: ServerProcess, client_id: str, secret: str, scope: str = "read write") -> str:
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": scope}
    answer = request(server.http + "/oauth2/token", form, headers=basic(client_id, secret))
    assert answer.status == 200, answer.body
    return str(answer.json()["access_token"])


def own_token(server: ServerProcess, client_id: str, secret: str) -> str:
    form = {"grant_type": "client_credentials"}
    answer = request(server.http + "/oauth2/token", form, headers=basic(client_id, secret))
    assert answer.status == 200, answer.body
    return str(answer.json()["access_token"])


def exchange(
    server: ServerProcess, client_id: str, secret: str, subject_token: str, **fields: str
) -> tuple[int, dict[str, object]]:
    form: list[tuple[str, str]] = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", fields.pop("subject_token_type", ACCESS)),
    ]
    for name, value in fields.items():
        for one in value.split(",") if name == "audience" else [value]:
            form.append((name, one))
    answer = request(server.http + "/oauth2/token", form, headers=basic(client_id, secret))
    assert answer.headers.get("Cache-Control") == "no-store"
    return answer.status, answer.json()


# -- over HTTP ---------------------------------------------------------------------------------


def test_http_exchange_with_an_actor_narrows_and_sets_act(server: ServerProcess) -> None:
    secret = gateway(server)
    alice = make_principal(server)
    subject = login(server, "gateway", secret)
    actor = own_token(server, "gateway", secret)

    status, answer = exchange(
        server,
        "gateway",
        secret,
        subject,
        actor_token=actor,
        actor_token_type=ACCESS,
        audience="orders",
        scope="read",
        requested_token_type=ACCESS,
    )
    assert status == 200, answer
    assert answer["issued_token_type"] == ACCESS and answer["token_type"] == "Bearer"
    assert answer["scope"] == "read" and "refresh_token" not in answer
    claims = payload(str(answer["access_token"]))
    assert claims["sub"] == alice and claims["aud"] == "orders" and claims["scope"] == "read"
    assert claims["client_id"] == "gateway"
    assert claims["act"] == {"sub": "gateway", "client_id": "gateway"}
    assert claims["exp"] <= payload(subject)["exp"]  # type: ignore[operator]
    with server.client(admin=False) as client:
        verdict = client.verify(str(answer["access_token"]), audience=["orders"])
    assert verdict.result == token_pb2.VERIFY_RESULT_VALID
    assert verdict.claims.extra["act"]["sub"] == "gateway"

    # Without an actor: no act, and without scope: the subject token's scopes.
    status, plain = exchange(server, "gateway", secret, subject)
    assert status == 200, plain
    assert "act" not in payload(str(plain["access_token"]))
    assert plain["scope"] == "read write"


def test_http_exchange_errors(server: ServerProcess) -> None:
    secret = gateway(server)
    make_principal(server)
    subject = login(server, "gateway", secret, scope="read")

    status, answer = exchange(
        server,
        "gateway",
        secret,
        subject,
        subject_token_type="urn:ietf:params:oauth:token-type:jwt",
    )
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    status, answer = exchange(server, "gateway", secret, subject, requested_token_type="x")
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    status, answer = exchange(server, "gateway", secret, subject, actor_token=subject)
    assert (status, answer["error"]) == (400, "invalid_request"), answer  # no actor_token_type
    status, answer = exchange(server, "gateway", secret, subject, scope="write")
    assert (status, answer["error"]) == (400, "invalid_scope"), answer  # wider than the subject
    status, answer = exchange(server, "gateway", secret, subject, audience="billing")
    assert (status, answer["error"]) == (400, "invalid_target"), answer
    status, answer = exchange(server, "gateway", secret, subject, resource="https://x")
    assert (status, answer["error"]) == (400, "invalid_target"), answer
    status, answer = exchange(server, "gateway", "cs_wrong", subject)
    assert (status, answer["error"]) == (401, "invalid_client"), answer

    public = request(
        server.http + "/oauth2/token",
        {
            "grant_type": EXCHANGE,
            "client_id": "gateway",
            "subject_token": subject,
            "subject_token_type": ACCESS,
        },
    )
    assert public.status == 401 and public.json()["error"] == "invalid_client"

    with server.client() as admin:
        admin.revoke(access_token=subject)
    status, answer = exchange(server, "gateway", secret, subject)
    assert (status, answer["error"]) == (400, "invalid_grant"), answer


def test_a_client_without_the_grant_cannot_exchange(server: ServerProcess) -> None:
    secret = gateway(server)
    other = make_client(server, "svc", (GRANTS.GRANT_TYPE_PASSWORD,))
    make_principal(server)
    subject = login(server, "svc", other)
    assert secret
    status, answer = exchange(server, "svc", other, subject)
    assert (status, answer["error"]) == (400, "unauthorized_client"), answer


# -- over gRPC, the same service --------------------------------------------------------------


def test_grpc_exchange_chains_delegation_across_services(server: ServerProcess) -> None:
    secret = gateway(server)
    # The orders service is a client whose id is the audience the gateway's token names.
    orders = make_client(
        server,
        "orders",
        (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS, GRANTS.GRANT_TYPE_TOKEN_EXCHANGE),
        audiences=("billing",),
    )
    alice = make_principal(server)
    subject = login(server, "gateway", secret)
    with server.client(admin=False) as client:
        first = client.exchange(
            "gateway",
            secret,
            subject,
            actor_token=own_token(server, "gateway", secret),
            audience=["orders"],
            scope=["read"],
        )
        assert first.issued_token_type == ACCESS
        assert first.tokens.refresh_token == "" and list(first.tokens.scope) == ["read"]
        # orders received a token meant for it and exchanges it for billing, as itself.
        second = client.exchange(
            "orders",
            orders,
            first.tokens.access_token,
            actor_token=own_token(server, "orders", orders),
            audience=["billing"],
        )
    claims = payload(second.tokens.access_token)
    assert claims["sub"] == alice and claims["aud"] == "billing" and claims["scope"] == "read"
    assert claims["act"] == {
        "sub": "orders",
        "client_id": "orders",
        "act": {"sub": "gateway", "client_id": "gateway"},
    }


def test_grpc_exchange_errors(server: ServerProcess) -> None:
    secret = gateway(server)
    make_principal(server)
    subject = login(server, "gateway", secret, scope="read")
    with server.client(admin=False) as client:

        def code(**kwargs: object) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as caught:
                client.exchange("gateway", secret, subject, **kwargs)  # type: ignore[arg-type]
            return caught.value.code()

        assert code(subject_token_type="jwt") == grpc.StatusCode.INVALID_ARGUMENT
        assert code(requested_token_type="refresh") == grpc.StatusCode.INVALID_ARGUMENT
        assert code(scope=["write"]) == grpc.StatusCode.PERMISSION_DENIED
        assert code(audience=["billing"]) == grpc.StatusCode.PERMISSION_DENIED
        mixed = token_pb2.TokenExchangeGrant(
            client_id="gateway",
            client_secret=secret,
            subject="alice",
            subject_token=subject,
            subject_token_type=ACCESS,
        )
        with pytest.raises(grpc.RpcError) as caught:
            client.tokens.Issue(token_pb2.IssueRequest(token_exchange=mixed))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        client.revoke(access_token=subject)
        assert code() == grpc.StatusCode.UNAUTHENTICATED
