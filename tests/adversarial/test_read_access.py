"""Who may read what: the revocation state, the admin API's shape, and the metrics.

The revocation view names principals, sessions, token ids and registered clients with
their times, and CheckRevocations tells which clients exist and were disabled: reading it
needs a credential. With a separate admin listener, the public listener's reflection does
not advertise the admin API; /metrics can live on an address of its own.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from authority_client import (
    REVOCATIONS_READ_SCOPE,
    CallbackRevocations,
    Claims,
    ClientCredentialsTokens,
    WatchedRevocations,
)
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authority.v1 import admin_pb2, revocation_pb2, revocation_pb2_grpc
from tests.integration import reflection_v1
from tests.integration.server import ServerProcess

StartServer = Callable[..., ServerProcess]
ADMIN_SERVICE = "authority.v1.AdminService"


def _create_client(server: ServerProcess, client_id: str, scopes: list[str]) -> str:
    with server.client() as admin:
        return admin.create_client(
            admin_pb2.Client(
                id=client_id,
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
                scopes=scopes,
                default_scopes=scopes,
            )
        ).client_secret


def _token(server: ServerProcess, client_id: str, secret: str) -> str:
    with server.client(admin=False) as client:
        return client.issue_with_client_credentials(client_id, secret).access_token


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _check(server: ServerProcess, metadata: tuple[tuple[str, str], ...] | None) -> grpc.StatusCode:
    """CheckRevocations asked whether client ``victim`` (disabled) is revoked."""
    with server.channel() as channel:
        stub = revocation_pb2_grpc.RevocationServiceStub(channel)
        request = revocation_pb2.CheckRevocationsRequest(
            tokens=[revocation_pb2.TokenIdentity(token_id="j", client_id="victim")]
        )
        try:
            answer = stub.CheckRevocations(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert "Traceback" not in (error.details() or "")
            return error.code()
        assert list(answer.revoked) == [True]
        return grpc.StatusCode.OK


def _watch(server: ServerProcess, metadata: tuple[tuple[str, str], ...] | None) -> grpc.StatusCode:
    """The first message of WatchRevocations: OK with a snapshot listing ``victim``."""
    with server.channel() as channel:
        stub = revocation_pb2_grpc.RevocationServiceStub(channel)
        call = stub.WatchRevocations(
            revocation_pb2.WatchRevocationsRequest(), metadata=metadata, timeout=10
        )
        try:
            first = next(iter(call))
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            return error.code()
        finally:
            call.cancel()
        values = {r.value for r in first.snapshot.revocations}
        assert "victim" in values
        return grpc.StatusCode.OK


def test_revocations_are_read_only_with_a_credential_and_the_scope(
    start_server: StartServer,
) -> None:
    server = start_server()
    reader_secret = _create_client(server, "reader", [REVOCATIONS_READ_SCOPE])
    other_secret = _create_client(server, "other", ["read"])
    _create_client(server, "victim", ["read"])
    with server.client() as admin:
        admin.set_client_disabled("victim", True)  # a client revocation in the view
    reader = _token(server, "reader", reader_secret)
    other = _token(server, "other", other_secret)

    cases = {
        "anonymous": (None, grpc.StatusCode.UNAUTHENTICATED),
        "not a token": (_bearer("garbage"), grpc.StatusCode.UNAUTHENTICATED),
        "basic auth": ((("authorization", "Basic cmVhZGVyOng="),), grpc.StatusCode.UNAUTHENTICATED),
        "token without the scope": (_bearer(other), grpc.StatusCode.PERMISSION_DENIED),
        "token with the scope": (_bearer(reader), grpc.StatusCode.OK),
    }
    for case, (metadata, expected) in cases.items():
        assert _check(server, metadata) is expected, f"CheckRevocations, {case}"
        assert _watch(server, metadata) is expected, f"WatchRevocations, {case}"
    # A revoked reader token no longer reads.
    with server.client(admin=False) as client:
        client.revoke(access_token=reader)
    assert _check(server, _bearer(reader)) is grpc.StatusCode.UNAUTHENTICATED
    assert _watch(server, _bearer(reader)) is grpc.StatusCode.UNAUTHENTICATED


async def test_the_client_library_reads_with_client_credentials(
    start_server: StartServer,
) -> None:
    server = start_server()
    secret = _create_client(server, "reader", [REVOCATIONS_READ_SCOPE])
    _create_client(server, "victim", ["read"])
    with server.client() as admin:
        admin.set_client_disabled("victim", True)
    claims = Claims(
        issuer=server.http,
        subject="victim",
        audience=("default",),
        expires_at=2**40,
        issued_at=1,
        not_before=1,
        token_id="j",
        session_id="",
        client_id="victim",
        scope=(),
        key_id="k",
    )
    credential = ClientCredentialsTokens(server.target, "reader", secret)
    callback = CallbackRevocations(server.target, credential=credential)
    watched = WatchedRevocations(server.target, credential=credential)
    anonymous = CallbackRevocations(server.target)
    try:
        status = await callback.check(claims)
        assert status.revoked and status.known
        async with asyncio.timeout(10):
            await watched.wait_synced()
        assert (await watched.check(claims)).revoked
        assert credential.issued == 1  # one token, shared and reused
        refused = await anonymous.check(claims)
        assert refused.revoked and not refused.known  # UNAUTHENTICATED: fail closed
        assert "UNAUTHENTICATED" in refused.detail
    finally:
        await watched.aclose()
        await callback.aclose()
        await anonymous.aclose()
        await credential.aclose()


def test_a_watch_stream_ends_when_its_token_expires(start_server: StartServer) -> None:
    server = start_server(AUTHORITY_ACCESS_TOKEN_TTL="2s", AUTHORITY_LEEWAY="0s")
    secret = _create_client(server, "reader", [REVOCATIONS_READ_SCOPE])
    token = _token(server, "reader", secret)
    with server.channel() as channel:
        stub = revocation_pb2_grpc.RevocationServiceStub(channel)
        call = stub.WatchRevocations(
            revocation_pb2.WatchRevocationsRequest(), metadata=_bearer(token), timeout=30
        )
        with pytest.raises(grpc.RpcError) as ended:
            for _ in call:
                pass
    assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "expired" in ended.value.details()  # type: ignore[attr-defined]


def _reflected_services(target: str) -> set[str]:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
        return {service.name for service in response.list_services_response.service}


def _ready_event(server: ServerProcess) -> dict[str, object]:
    return next(e for e in server.events() if e.get("event") == "authority.ready")


def test_with_an_admin_listener_the_public_reflection_lists_no_admin_service(
    start_server: StartServer,
) -> None:
    """In both reflection versions: v1alpha (grpcio-reflection's) and v1 (our own)."""
    single = start_server()
    for reflected in (_reflected_services, reflection_v1.services):
        assert ADMIN_SERVICE in reflected(single.target)  # one listener serves all

    split = start_server(AUTHORITY_ADMIN_ADDRESS="127.0.0.1:0")
    admin_port = int(str(_ready_event(split)["admin_port"]))
    for reflected in (_reflected_services, reflection_v1.services):
        public = reflected(split.target)
        assert ADMIN_SERVICE not in public
        assert "authority.v1.TokenService" in public and "authority.v1.RevocationService" in public
        assert ADMIN_SERVICE in reflected(f"127.0.0.1:{admin_port}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_metrics_can_live_on_their_own_address(start_server: StartServer) -> None:
    server = start_server(AUTHORITY_METRICS_ADDRESS="127.0.0.1:0")
    metrics_port = int(str(_ready_event(server)["metrics_port"]))
    status, body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and b"authority_rpc_requests" in body
    # The public listener no longer serves them, and the metrics one serves nothing else.
    assert _get(f"{server.http}/metrics")[0] == 404
    assert _get(f"{server.http}/.well-known/jwks.json")[0] == 200
    assert _get(f"http://127.0.0.1:{metrics_port}/.well-known/jwks.json")[0] == 404
