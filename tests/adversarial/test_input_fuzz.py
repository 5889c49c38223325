"""Every input gets a clear answer: arbitrary field values, sent to every RPC of every
service of a real server, never get INTERNAL or UNKNOWN, and the server lives on.

Requests are built from the services' descriptors and encoded by hand, so that string
fields can carry invalid UTF-8 (which no protobuf library would serialise), integers
any 64-bit value, enums unknown numbers, and timestamps and durations any seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authority.domain.clients import Client, GrantType
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.sqlite import SqliteStore
from authority.v1 import admin_pb2, keys_pb2, revocation_pb2, revocation_pb2_grpc, token_pb2
from tests.integration.server import ADMIN_TOKEN, ServerProcess
from tests.services import fresh_database

SERVICES = [
    token_pb2.DESCRIPTOR.services_by_name["TokenService"],
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    revocation_pb2.DESCRIPTOR.services_by_name["RevocationService"],
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
# A few hundred in all for CI; AUTHORITY_FUZZ_EXAMPLES=500 for a deeper search.
EXAMPLES_PER_METHOD = int(os.environ.get("AUTHORITY_FUZZ_EXAMPLES", "16"))
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
IDENTITY = (lambda b: b, lambda b: b)
GENEROUS = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "100000",
    "AUTHORITY_ARGON2_MEMORY_KIB": "1024",  # the fuzz is about answers, not hash cost
    "AUTHORITY_ARGON2_TIME_COST": "1",
}
RUN: dict[str, Any] = {"examples": 0, "codes": {}}

# -- the protobuf wire format, by hand ---------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


# Strings: ordinary text, text that matters (names, ids, URLs), huge text, and raw bytes
# (invalid UTF-8, NULs, surrogates' encodings).
_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "alice",
            "default",
            "p_0",
            "s_x",
            "http://127.0.0.1:1/h",
            "https://example.com/h",
            "\x00",
            "a" * 300,
            "eyJhbGciOiJFZERTQSJ9.e30.x",
        ]
    ),
    st.integers(min_value=0, max_value=60_000).map(lambda n: "x" * n),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
_raw = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\x80", b"\xf4\x90\x80\x80"]),
)
_strings = st.one_of(_texts, _raw)
_integers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**12, 315576000001]),
)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> bytes:
    """Arbitrary encoded fields of ``descriptor``, in arbitrary order, some repeated."""
    parts: list[bytes] = []
    for field in descriptor.fields:
        repeated = field.is_repeated
        count = draw(st.integers(0, 3 if repeated else 1)) if depth < 3 else 0
        for _ in range(count):
            parts.append(draw(_value(field, depth)))
    if draw(st.booleans()) and depth == 0:
        parts.append(_field(999, 0, _varint(7)))  # an unknown field is kept, not fatal
    return b"".join(draw(st.permutations(parts)) if parts else [])


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[bytes]:
    number = field.number
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings.map(lambda data: _length_delimited(number, data))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64).map(lambda data: _length_delimited(number, data))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.integers(0, 3).map(lambda v: _field(number, 0, _varint(v)))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64):
        return st.binary(min_size=8, max_size=8).map(lambda data: _field(number, 1, data))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32):
        return st.binary(min_size=4, max_size=4).map(lambda data: _field(number, 5, data))
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message(field.message_type, depth + 1).map(
            lambda data: _length_delimited(number, data)
        )
    # int32, int64, uint*, sint* (as varints: any bits), enums (any number)
    return _integers.map(lambda v: _field(number, 0, _varint(v)))


# -- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per backend: PostgreSQL refuses values SQLite keeps (NUL in text)."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:
        env = dict(GENEROUS)
        if request.param == "postgres":
            env["AUTHORITY_DATABASE_URL"] = stack.enter_context(fresh_database())
        server = ServerProcess(data_dir, env).start()
        stack.callback(server.kill)
        with server.client() as client:  # something to find: a principal
            client.create_principal("alice", "correct horse battery staple 42")
        yield server
    print(f"\ninput fuzz: {RUN['examples']} examples so far, answers: {RUN['codes']}")


@pytest.fixture(scope="module")
def channel(fuzz_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        fuzz_server.target, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    ) as channel:
        yield channel


def _call(channel: grpc.Channel, method: MethodDescriptor, body: bytes, admin: bool) -> Any:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),) if admin else ()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, *IDENTITY)(body, metadata=metadata, timeout=5)
            try:
                next(iter(stream))  # the first answer (a snapshot), then hang up
            finally:
                stream.cancel()
            return grpc.StatusCode.OK
        channel.unary_unary(path, *IDENTITY)(body, metadata=metadata, timeout=20)
    except grpc.RpcError as error:
        code = error.code()
        if code is grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK  # our own cancel after the first message
        assert code not in NEVER, f"{path}: {code.name} {error.details()!r} for {body!r}"
        # No exception class name leaks into the answer (unless the caller sent the word
        # and the answer quotes it back: "no principal named 'Error'").
        echoed = "Error" in body.decode("utf-8", "replace")
        assert echoed or "Error" not in (error.details() or ""), f"{path}: {error.details()!r}"
        return code
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_arbitrary_requests_get_a_clear_answer(
    channel: grpc.Channel, fuzz_server: ServerProcess, method: MethodDescriptor
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_METHOD,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(body=_message(method.input_type), admin=st.sampled_from([True, True, True, False]))
    def fuzz(body: bytes, admin: bool) -> None:
        code = _call(channel, method, body, admin)
        RUN["examples"] += 1
        RUN["codes"][code.name] = RUN["codes"].get(code.name, 0) + 1

    fuzz()
    # Alive, and still doing its job.
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    verify = channel.unary_unary(
        "/authority.v1.TokenService/Verify",
        request_serializer=token_pb2.VerifyRequest.SerializeToString,
        response_deserializer=token_pb2.VerifyResponse.FromString,
    )(token_pb2.VerifyRequest(token="x.y.z"), timeout=10)
    assert verify.result == token_pb2.VERIFY_RESULT_MALFORMED


# -- undecodable requests are answered, logged and counted like any call ------------------


def _invalid_utf8(number: int) -> bytes:
    return _length_delimited(number, b"al\xffice")


def test_undecodable_requests_are_invalid_argument_logged_and_counted(
    channel: grpc.Channel, fuzz_server: ServerProcess
) -> None:
    cases = {
        "/authority.v1.TokenService/Verify": _invalid_utf8(1),
        "/authority.v1.AdminService/GetPrincipal": _invalid_utf8(1),
        "/authority.v1.RevocationService/CheckRevocations": _length_delimited(1, _invalid_utf8(1)),
    }
    for path, body in cases.items():
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(path, *IDENTITY)(
                body,
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"), ("x-request-id", path)),
                timeout=10,
            )
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, path
        details = raised.value.details() or ""
        assert details.startswith("the request could not be decoded"), details
        assert "DecodeError" not in details and "google.protobuf" not in details
    # An aborted call's line is written as its handler unwinds, after the answer.
    deadline = time.monotonic() + 10
    while True:
        lines = [e for e in fuzz_server.events() if e.get("event") == "rpc"]
        logged = {e["method"]: e["code"] for e in lines if e.get("request_id") in cases}
        if len(logged) == len(cases) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert logged == dict.fromkeys(cases, "INVALID_ARGUMENT")
    with urllib.request.urlopen(f"{fuzz_server.http}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    counted = {
        (labels["method"], labels["code"]): float(value)
        for text, value in re.findall(
            r"^authority_rpc_requests_total\{([^}]*)\} (\S+)$", exposition, re.MULTILINE
        )
        for labels in [dict(re.findall(r'(\w+)="([^"]*)"', text))]
    }
    for path in cases:
        assert counted.get((path.lstrip("/"), "INVALID_ARGUMENT"), 0) >= 1, path


# -- the observed cases -------------------------------------------------------------------

EIGHT_THOUSAND_YEARS = 8000 * 365 * 86400
PASSWORD = "correct horse battery staple 42"


def _client(client_id: str, absolute: Duration, idle: Duration | None = None) -> admin_pb2.Client:
    return admin_pb2.Client(
        id=client_id,
        grant_types=[admin_pb2.GRANT_TYPE_PASSWORD, admin_pb2.GRANT_TYPE_REFRESH_TOKEN],
        audiences=["default"],
        session_absolute_ttl=absolute,
        session_idle_ttl=idle or Duration(seconds=3600),
    )


@settings(max_examples=30, deadline=None, database=None)
@given(
    seconds=st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([EIGHT_THOUSAND_YEARS, 315576000000, 315576000001, 10 * 365 * 86400]),
    ),
    nanos=st.one_of(st.just(0), st.integers(min_value=-(2**31), max_value=2**31 - 1)),
)
def test_session_lifetimes_are_bounded_and_logins_keep_working(
    channel: grpc.Channel, fuzz_server: ServerProcess, seconds: int, nanos: int
) -> None:
    """Observed: a client with a session lifetime of ~8,000 years was accepted, and every
    login through it then failed with INTERNAL."""
    RUN["examples"] += 1
    with fuzz_server.client() as client:
        # Our own principal: the fuzz above may have disabled, deleted or re-keyed alice.
        with contextlib.suppress(grpc.RpcError):
            client.create_principal("lifetime-tester", PASSWORD)
        client_id = f"c{abs(hash((seconds, nanos))) % 10**12}"
        try:
            client.create_client(_client(client_id, Duration(seconds=seconds, nanos=nanos)))
        except grpc.RpcError as error:
            assert error.code() in {
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.ALREADY_EXISTS,
            }, error.details()
            return
        pair = client.issue_with_password("lifetime-tester", PASSWORD, client_id=client_id)
        assert client.verify(pair.access_token).result == token_pb2.VERIFY_RESULT_VALID


def test_an_eight_thousand_year_session_is_refused_with_a_clear_message(
    fuzz_server: ServerProcess,
) -> None:
    with fuzz_server.client() as client, pytest.raises(grpc.RpcError) as raised:
        client.create_client(_client("ancient", Duration(seconds=EIGHT_THOUSAND_YEARS)))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "session_absolute_ttl" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (-62135596801, 0),  # before year 1
        (253402300800, 0),  # after 9999-12-31
        (10**15, 0),
        (-(2**63), 0),
        (0, -1),
        (0, 1_000_000_000),
        (-1, 0),
    ],
)
def test_out_of_range_audit_times_are_invalid_argument(
    channel: grpc.Channel, seconds: int, nanos: int
) -> None:
    """Observed: out-of-range ListAuditEvents times answered INTERNAL."""
    request = admin_pb2.ListAuditEventsRequest(
        start_time=Timestamp(seconds=seconds, nanos=nanos),
    )
    for field in ("start_time", "end_time"):
        if field == "end_time":
            request = admin_pb2.ListAuditEventsRequest(
                end_time=Timestamp(seconds=seconds, nanos=nanos)
            )
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(
                "/authority.v1.AdminService/ListAuditEvents",
                request_serializer=admin_pb2.ListAuditEventsRequest.SerializeToString,
                response_deserializer=admin_pb2.ListAuditEventsResponse.FromString,
            )(request, metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),), timeout=10)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in (raised.value.details() or "")


def _seed_oversized_state(data_dir: Path, values: list[str]) -> None:
    """What a store written before the bounds may hold: huge revocation values and a
    client with an 8,000-year session lifetime."""

    async def seed() -> None:
        store = SqliteStore(data_dir / "authority.db")
        await store.open()
        try:
            now = datetime.now(UTC)
            for value in values:
                revocation = Revocation(
                    RevocationKind.SUBJECT, value, now.timestamp(), now.timestamp() + 3600
                )
                await store.record_revocation(revocation, at=now)
            await store.create_client(
                Client(
                    id="ancient",
                    secret_hash=b"",
                    grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
                    audiences=("default",),
                    scopes=frozenset(),
                    default_scopes=(),
                    access_token_ttl=timedelta(minutes=5),
                    session_idle_ttl=timedelta(days=8000 * 365),
                    session_absolute_ttl=timedelta(days=8000 * 365),
                    disabled=False,
                    created_at=now,
                )
            )
        finally:
            await store.close()

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    asyncio.run(seed())


def test_oversized_values_are_refused_and_old_ones_do_not_break_watch_or_login(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Observed: twenty 60 KB revocation values made every WatchRevocations snapshot a
    message over 1 MiB, failing every follower until they expired."""
    values = [f"p_{index}_" + "v" * 60_000 for index in range(20)]
    data_dir = tmp_path / "seeded"
    _seed_oversized_state(data_dir, values)
    server = start_server(data_dir, **GENEROUS)
    with server.client() as client:
        # New ones are refused at the door.
        with pytest.raises(grpc.RpcError) as raised:
            client.revoke(subject="q_" + "v" * 60_000)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "subject" in (raised.value.details() or "")
        # The stored ones still reach a follower, in messages under the limit.
        received: list[str] = []
        with grpc.insecure_channel(server.target) as channel:
            stream = revocation_pb2_grpc.RevocationServiceStub(channel).WatchRevocations(
                revocation_pb2.WatchRevocationsRequest(),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                timeout=30,
            )
            messages = 0
            for message in stream:
                messages += 1
                if message.HasField("snapshot"):
                    assert message.ByteSize() < 1024 * 1024
                    received += [r.value for r in message.snapshot.revocations]
                    if message.snapshot.complete:
                        break
            stream.cancel()
        assert set(values) <= set(received)
        assert messages > 1
        # And the client stored with an 8,000-year session lifetime can log in again.
        client.create_principal("bob", PASSWORD)
        pair = client.issue_with_password("bob", PASSWORD, client_id="ancient")
        assert client.verify(pair.access_token).result == token_pb2.VERIFY_RESULT_VALID
        assert client.refresh(pair.refresh_token).access_token
