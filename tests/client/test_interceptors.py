"""The interceptors on real gRPC servers (aio and sync) on ephemeral ports: missing, invalid
and valid tokens, per-method scopes, public methods, and claims visible in handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from authority_client import (
    AuthorityInterceptor,
    Require,
    SyncAuthorityInterceptor,
    SyncLocalVerifier,
    current_claims,
)
from authority_client.interceptors import _Policy
from authority_client.jwks import StaticJwksSource
from authority_client.verifier import LocalVerifier

from tests.client.support import ISSUER, SigningKey, claims, jwks_document

SERVICE = "test.Orders"
REQUIREMENTS = {
    f"/{SERVICE}/Create": Require(scopes={"orders:write"}),
    f"/{SERVICE}/Health": Require(public=True),
    f"/{SERVICE}/Billing": Require(audience="billing"),
}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("EdDSA")


def _verifier(key: SigningKey) -> LocalVerifier:
    return LocalVerifier(StaticJwksSource(jwks_document(key)), issuer=ISSUER, audience="orders")


def _who(extra: str = "") -> bytes:
    found = current_claims()
    return json.dumps({"sub": found.subject, "scope": list(found.scope), "via": extra}).encode()


def _anonymous() -> bytes:
    try:
        current_claims()
    except LookupError:
        return b"anonymous"
    return b"leaked claims"


# -- handlers of every kind --------------------------------------------------------------


async def aio_whoami(request: bytes, context: Any) -> bytes:
    return _who("aio")


async def aio_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(3):
        yield _who(f"stream{i}")


async def aio_count(requests: AsyncIterator[bytes], context: Any) -> bytes:
    count = 0
    async for _ in requests:
        count += 1
    return _who(f"count{count}")


async def aio_health(request: bytes, context: Any) -> bytes:
    return _anonymous()


def sync_whoami(request: bytes, context: Any) -> bytes:
    return _who("sync")


def sync_stream(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(3):
        yield _who(f"stream{i}")


def sync_count(requests: Iterator[bytes], context: Any) -> bytes:
    return _who(f"count{sum(1 for _ in requests)}")


def sync_health(request: bytes, context: Any) -> bytes:
    return _anonymous()


def _generic(unary: Any, stream: Any, count: Any, health: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Whoami": grpc.unary_unary_rpc_method_handler(unary),
            "Create": grpc.unary_unary_rpc_method_handler(unary),
            "Billing": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Count": grpc.stream_unary_rpc_method_handler(count),
            "Health": grpc.unary_unary_rpc_method_handler(health),
            "SyncOnAio": grpc.unary_unary_rpc_method_handler(sync_whoami),
        },
    )


# -- one behaviour table, two servers --------------------------------------------------------


def _call(channel: grpc.Channel, method: str, token: str | None) -> tuple[grpc.StatusCode, Any]:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    try:
        if method == "Count":
            upload: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                f"/{SERVICE}/{method}"
            )
            return grpc.StatusCode.OK, upload(iter([b"a", b"b"]), metadata=metadata, timeout=10)
        if method == "Stream":
            stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                f"/{SERVICE}/{method}"
            )
            return grpc.StatusCode.OK, [json.loads(a) for a in stream(b"", metadata=metadata)]
        unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/{method}"
        )
        return grpc.StatusCode.OK, unary(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code(), error.details()


def _check_behaviour(target: str, key: SigningKey, *, sync_on_aio: bool = False) -> None:
    reader = key.sign(claims(scope="orders:read"))
    writer = key.sign(claims(scope="orders:read orders:write", sub="p_writer"))
    expired = key.sign(claims(exp=int(time.time()) - 3600))
    with grpc.insecure_channel(target) as channel:
        code, details = _call(channel, "Whoami", None)
        assert code is grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in details

        code, details = _call(channel, "Whoami", "garbage")
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith("VERIFY_RESULT_MALFORMED")

        code, details = _call(channel, "Whoami", expired)
        assert code is grpc.StatusCode.UNAUTHENTICATED and "VERIFY_RESULT_EXPIRED" in details

        h, p, s = reader.split(".")
        code, details = _call(channel, "Whoami", f"{h}.{p}.{s[:-4]}AAAA")
        assert code is grpc.StatusCode.UNAUTHENTICATED and "BAD_SIGNATURE" in details

        bad_scheme: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/Whoami"
        )
        with pytest.raises(grpc.RpcError) as caught:
            bad_scheme(b"", metadata=(("authorization", f"Basic {reader}"),))
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

        code, answer = _call(channel, "Whoami", reader)
        assert code is grpc.StatusCode.OK
        assert json.loads(answer)["sub"] == "p_alice"

        code, details = _call(channel, "Create", reader)
        assert code is grpc.StatusCode.PERMISSION_DENIED and "orders:write" in details
        code, answer = _call(channel, "Create", writer)
        assert code is grpc.StatusCode.OK and json.loads(answer)["sub"] == "p_writer"

        code, details = _call(channel, "Billing", reader)  # aud orders, method wants billing
        assert code is grpc.StatusCode.UNAUTHENTICATED and "WRONG_AUDIENCE" in details

        code, answers = _call(channel, "Stream", writer)
        assert code is grpc.StatusCode.OK
        assert [a["via"] for a in answers] == ["stream0", "stream1", "stream2"]
        assert {a["sub"] for a in answers} == {"p_writer"}

        code, answer = _call(channel, "Count", reader)
        assert code is grpc.StatusCode.OK and json.loads(answer)["via"] == "count2"
        code, details = _call(channel, "Count", None)
        assert code is grpc.StatusCode.UNAUTHENTICATED

        # A public method needs no token, and sees no claims left over from earlier calls.
        for _ in range(3):
            code, answer = _call(channel, "Health", None)
            assert (code, answer) == (grpc.StatusCode.OK, b"anonymous")

        if sync_on_aio:
            code, answer = _call(channel, "SyncOnAio", reader)
            assert code is grpc.StatusCode.OK and json.loads(answer)["via"] == "sync"
            code, details = _call(channel, "SyncOnAio", None)
            assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_aio_server(key: SigningKey) -> None:
    verifier = _verifier(key)
    server = grpc.aio.server(
        interceptors=[AuthorityInterceptor(verifier, requirements=REQUIREMENTS)],
        migration_thread_pool=ThreadPoolExecutor(2),  # for the sync handler on an aio server
    )
    server.add_generic_rpc_handlers((_generic(aio_whoami, aio_stream, aio_count, aio_health),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await asyncio.to_thread(_check_behaviour, f"127.0.0.1:{port}", key, sync_on_aio=True)
    finally:
        await server.stop(None)
        await verifier.aclose()


def test_sync_server(key: SigningKey) -> None:
    verifier = SyncLocalVerifier(_verifier(key))
    # One worker: a claims leak from one call into the next would show on "Health".
    server = grpc.server(
        ThreadPoolExecutor(max_workers=1),
        interceptors=[SyncAuthorityInterceptor(verifier, requirements=REQUIREMENTS)],
    )
    server.add_generic_rpc_handlers((_generic(sync_whoami, sync_stream, sync_count, sync_health),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        _check_behaviour(f"127.0.0.1:{port}", key)
    finally:
        server.stop(None)
        verifier.close()


def test_requirements_resolve_exact_then_service_then_default() -> None:
    policy = _Policy(
        {"/a.S/M": Require(scopes="x"), "/a.S/*": Require(scopes={"y"})},
        Require(audience=["z"]),
    )
    assert policy.requirement("/a.S/M").scopes == frozenset({"x"})
    assert policy.requirement("/a.S/Other").scopes == frozenset({"y"})
    assert policy.requirement("/b.T/M").audience == ("z",)
