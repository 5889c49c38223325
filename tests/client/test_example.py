"""The example backend as a user runs it: a subprocess in front of a real authority."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToJson
from google.protobuf.struct_pb2 import Struct

from authority.v1 import admin_pb2
from tests.client.support import REVOCATION_SERVICE
from tests.integration.server import ServerProcess

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "clients" / "python" / "examples" / "orders_backend.py"
SERVICE = "/example.orders.v1.Orders"


@pytest.fixture
def backend(
    start_server: Callable[..., ServerProcess],
) -> Iterator[tuple[ServerProcess, str, subprocess.Popen[str]]]:
    authority = start_server()
    # Until the authority serves RevocationService, the backend would (rightly) fail closed.
    revocations = "watch" if REVOCATION_SERVICE else "none"
    # The backend reads revocations with its own client credentials (as the docstring says).
    with authority.client() as admin:
        secret = admin.create_client(
            admin_pb2.Client(
                id="orders-backend",
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
                scopes=["authority:revocations.read"],
                default_scopes=["authority:revocations.read"],
            )
        ).client_secret
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--authority",
            authority.target,
            "--jwks-url",
            authority.http + "/.well-known/jwks.json",
            "--listen",
            "127.0.0.1:0",
            "--revocations",
            revocations,
            "--client-id",
            "orders-backend",
        ],
        env={**os.environ, "ORDERS_CLIENT_SECRET": secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(30) and process.poll() is None, "".join(lines)
        address = lines[-1].rsplit(" ", 1)[1].strip()
        yield authority, address, process
    finally:
        process.terminate()
        try:
            assert process.wait(10) == 0, "".join(lines)
        finally:
            process.kill()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _token(authority: ServerProcess, scopes: list[str]) -> str:
    with authority.client() as client:
        created = client.create_client(
            admin_pb2.Client(
                id="shop-" + "-".join(s.replace(":", "_") for s in scopes),
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["orders"],
                scopes=["orders:read", "orders:write"],
            )
        )
        return client.issue_with_client_credentials(
            created.client.id, created.client_secret, audience=["orders"], scope=scopes
        ).access_token


def test_the_example_backend_starts_and_answers(
    backend: tuple[ServerProcess, str, subprocess.Popen[str]],
) -> None:
    authority, address, _ = backend
    reader = _token(authority, ["orders:read"])
    writer = _token(authority, ["orders:read", "orders:write"])
    with grpc.insecure_channel(address) as channel:
        create = channel.unary_unary(
            f"{SERVICE}/CreateOrder",
            request_serializer=Struct.SerializeToString,
            response_deserializer=Struct.FromString,
        )
        list_orders = channel.unary_unary(
            f"{SERVICE}/ListOrders",
            request_serializer=Struct.SerializeToString,
            response_deserializer=Struct.FromString,
        )
        request = Struct()
        request.update({"item": "teapot"})

        with pytest.raises(grpc.RpcError) as caught:
            create(request, timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.RpcError) as caught:
            create(request, metadata=_bearer(reader), timeout=10)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED

        order = create(request, metadata=_bearer(writer), timeout=10)
        assert order["item"] == "teapot"
        assert order["client_id"] == "shop-orders_read-orders_write"

        listed = list_orders(Struct(), metadata=_bearer(writer), timeout=10)
        assert json.loads(MessageToJson(listed))["orders"][0]["item"] == "teapot"

        if REVOCATION_SERVICE:
            with authority.client() as client:
                client.revoke(access_token=writer)
            deadline = 50
            for _ in range(deadline):
                try:
                    list_orders(Struct(), metadata=_bearer(writer), timeout=10)
                except grpc.RpcError as error:
                    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
                    assert "REVOKED" in (error.details() or "")
                    break
                threading.Event().wait(0.1)
            else:
                pytest.fail("the revocation never reached the backend")
