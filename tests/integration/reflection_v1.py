"""A client of gRPC server reflection ``v1`` (``grpc.reflection.v1``), for tests.

grpcio-reflection ships only the ``v1alpha`` messages, so the ``v1`` ones are declared
here from the protocol's definition (grpc/grpc-proto ``grpc/reflection/v1``), in a pool
of their own: the client shares nothing with the server's implementation. Only the
fields the tests use are declared; the others are skipped as unknown fields.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
_F = descriptor_pb2.FieldDescriptorProto


def _message(
    name: str, *fields: tuple[str, int, int, str, bool], oneof: str = ""
) -> descriptor_pb2.DescriptorProto:
    """A message; with ``oneof``, its fields numbered above 2 are that oneof (as in v1)."""
    proto = descriptor_pb2.DescriptorProto(name=name)
    if oneof:
        proto.oneof_decl.add(name=oneof)
    for field_name, number, kind, type_name, repeated in fields:
        field = proto.field.add(
            name=field_name,
            number=number,
            type=kind,
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        )
        if type_name:
            field.type_name = type_name
        if oneof and number > 2:
            field.oneof_index = 0
    return proto


def _classes() -> dict[str, Any]:
    p = ".grpc.reflection.v1."
    string, msg, raw, int32 = _F.TYPE_STRING, _F.TYPE_MESSAGE, _F.TYPE_BYTES, _F.TYPE_INT32
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/reflection_v1_client.proto", package="grpc.reflection.v1", syntax="proto3"
    )
    file.message_type.extend(
        [
            _message(
                "ServerReflectionRequest",
                ("host", 1, string, "", False),
                ("file_containing_symbol", 4, string, "", False),
                ("list_services", 7, string, "", False),
                oneof="message_request",
            ),
            _message(
                "ServerReflectionResponse",
                ("valid_host", 1, string, "", False),
                ("original_request", 2, msg, p + "ServerReflectionRequest", False),
                ("file_descriptor_response", 4, msg, p + "FileDescriptorResponse", False),
                ("list_services_response", 6, msg, p + "ListServiceResponse", False),
                ("error_response", 7, msg, p + "ErrorResponse", False),
                oneof="message_response",
            ),
            _message("FileDescriptorResponse", ("file_descriptor_proto", 1, raw, "", True)),
            _message("ListServiceResponse", ("service", 1, msg, p + "ServiceResponse", True)),
            _message("ServiceResponse", ("name", 1, string, "", False)),
            _message(
                "ErrorResponse",
                ("error_code", 1, int32, "", False),
                ("error_message", 2, string, "", False),
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}")
        )
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    }


_CLASSES = _classes()
Request = _CLASSES["ServerReflectionRequest"]
Response = _CLASSES["ServerReflectionResponse"]


def ask(target: str, **request: str) -> Any:
    """One ``v1`` request (e.g. ``list_services=""``) and its answer."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        return next(iter(call(iter([Request(**request)]), timeout=10)))


def services(target: str) -> set[str]:
    """The service names the server lists over reflection ``v1``."""
    return {
        service.name for service in ask(target, list_services="").list_services_response.service
    }
