"""Verify and ext_authz Check answer through the serializers that reuse a remembered
answer's bytes; every other method keeps its message's own serializer, and a method
looked up through the generic handler gets the same serializer as the registered one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc

from authority.api import convert, ext_authz, token_service
from authority.envoy.service.auth.v3 import external_auth_pb2
from authority.v1 import token_pb2


class _Details(NamedTuple):
    method: str
    invocation_metadata: Sequence[tuple[str, str]] = ()


class _Recorder:
    """A server stand-in that keeps what the generated registration gives it."""

    def __init__(self) -> None:
        self.registered: dict[str, Any] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.update({f"/{service}/{name}": h for name, h in handlers.items()})

    def serializer(self, method: str) -> Any:
        registered = self.registered[method].response_serializer
        found = [g.service(_Details(method)) for g in self.generic]  # type: ignore[arg-type]
        generic = [h.response_serializer for h in found if h is not None]
        assert generic == [registered], method
        return registered


def test_verify_and_check_answer_through_the_remembering_serializers() -> None:
    server = _Recorder()
    # Registration only takes the servicers' bound methods: no dependencies needed.
    token_service.add_to_server(
        token_service.TokenServicer.__new__(token_service.TokenServicer),
        server,  # type: ignore[arg-type]
    )
    ext_authz.add_to_server(
        ext_authz.AuthorizationServicer.__new__(ext_authz.AuthorizationServicer),
        server,  # type: ignore[arg-type]
    )
    assert server.serializer(token_service.VERIFY_METHOD) is convert.verify_response_bytes
    assert server.serializer(ext_authz.CHECK_METHOD) is ext_authz.check_response_bytes
    assert (
        server.serializer("/authority.v1.TokenService/Issue")
        == token_pb2.IssueResponse.SerializeToString
    )
    verify = server.registered[token_service.VERIFY_METHOD]
    assert verify.request_deserializer == token_pb2.VerifyRequest.FromString
    check = server.registered[ext_authz.CHECK_METHOD]
    assert check.request_deserializer == external_auth_pb2.CheckRequest.FromString


def test_an_answer_not_remembered_is_serialized_as_it_is() -> None:
    answer = token_pb2.VerifyResponse(result=token_pb2.VERIFY_RESULT_EXPIRED, detail="x")
    assert convert.verify_response_bytes(answer) == answer.SerializeToString()
    denied = ext_authz.unauthenticated(None)
    assert ext_authz.check_response_bytes(denied) == denied.SerializeToString()
