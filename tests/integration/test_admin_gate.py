"""Every admin RPC is refused before its handler runs, with the same answers as before
the checks moved from the handlers into one interceptor (``api.admin_auth.AdminGate``)."""

from __future__ import annotations

import grpc
import pytest

from authority.api.admin_auth import ADMIN_METHODS
from authority.v1 import admin_pb2, keys_pb2
from tests.integration.server import ServerProcess

MISSING = "this RPC needs the admin credential (authorization: Bearer ...)"
INVALID = "the admin credential is not valid"


def _call(
    channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str]:
    # An empty message is every request type's default value.
    stub = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.RpcError) as caught:
        stub(b"", metadata=metadata, timeout=10)
    return caught.value.code(), caught.value.details()  # type: ignore[attr-defined]


def test_the_gate_covers_admin_service_and_key_management() -> None:
    admin = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert {f"/{admin.full_name}/{m.name}" for m in admin.methods} <= ADMIN_METHODS
    keys = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
    assert {m for m in ADMIN_METHODS if m.startswith(f"/{keys}/")} == {
        f"/{keys}/RotateKeys",
        f"/{keys}/CompromiseKey",
    }


def test_every_admin_rpc_is_refused_without_the_credential(server: ServerProcess) -> None:
    wrong = (("authorization", "Bearer " + "y" * 48),)
    with server.channel() as channel:
        for method in sorted(ADMIN_METHODS):
            assert _call(channel, method, ()) == (grpc.StatusCode.UNAUTHENTICATED, MISSING)
            assert _call(channel, method, wrong) == (grpc.StatusCode.PERMISSION_DENIED, INVALID)


def test_the_public_key_rpcs_need_no_credential(server: ServerProcess) -> None:
    with server.client(admin=False) as client:
        assert client.keys.GetJwks(keys_pb2.GetJwksRequest(), timeout=10).keys
        assert client.keys.ListKeys(keys_pb2.ListKeysRequest(), timeout=10).keys
