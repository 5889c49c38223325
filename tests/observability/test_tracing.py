"""Tracing (the otel extra): a server span per gRPC and HTTP call, parented to the
caller's W3C ``traceparent``, with child spans for the store and Redis calls it makes;
off unless ``OTEL_*`` asks for it; exported over OTLP/HTTP; and the trace id on the
request's log line."""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from authority.config import ConfigError, Settings
from authority.observability import tracing
from authority.observability.otel import Tracing
from authority.runtime.runtime import Authority
from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tests.integration.conftest import start_server  # noqa: F401 - the fixture
from tests.integration.server import ServerProcess
from tests.services import redis_url

ADMIN_TOKEN = "adm_test_" + "t" * 40
PASSWORD = "correct horse battery staple"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@dataclass
class Traced:
    authority: Authority
    spans: InMemorySpanExporter

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def server_span(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.finished() if s.name == name and s.kind is SpanKind.SERVER]
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            s
            for s in self.finished()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]


def settings_for(data_dir: Path, **overrides: object) -> Settings:
    settings = Settings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        kek=None,
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        argon2_parallelism=1,
        **overrides,  # type: ignore[arg-type]
    )
    settings.validate()
    return settings


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The settings of the server under test (``redis``: the gate and limits in Redis)."""
    if request.param == "redis":
        return settings_for(tmp_path, redis_url=redis_url(), redis_prefix=f"t{uuid.uuid4().hex}")
    return settings_for(tmp_path)


@pytest.fixture
async def traced(backend: Settings) -> AsyncIterator[Traced]:
    spans = InMemorySpanExporter()
    authority = Authority(backend, tracing=Tracing.with_processor(SimpleSpanProcessor(spans)))
    try:
        await authority.start()
        yield Traced(authority, spans)
    finally:
        await authority.stop(grace=0)


def _channel(traced: Traced) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{traced.authority.ports.grpc}")


async def _issue(channel: grpc.aio.Channel, **metadata: str) -> str:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    await admin.CreatePrincipal(
        admin_pb2.CreatePrincipalRequest(name="alice", password=PASSWORD),
        metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
    )
    answer = await token_pb2_grpc.TokenServiceStub(channel).Issue(
        token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal="alice", password=PASSWORD)
        ),
        metadata=list(metadata.items()),
    )
    return str(answer.tokens.access_token)


# -- on or off -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "authority"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask_for_it(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing.wanted(environ) is on
    assert bool(tracing.log_processors(environ)) is on


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER: 'zipkin' is not supported"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not"),
    ],
)
def test_an_exporter_we_cannot_honour_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        tracing.from_environment()


async def test_without_otel_variables_no_tracing_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    authority = Authority(settings_for(tmp_path))
    assert authority.tracing is None
    assert authority.base.tracing is None


# -- gRPC ------------------------------------------------------------------------------


async def test_a_grpc_call_is_a_server_span_parented_to_the_callers_traceparent(
    traced: Traced,
) -> None:
    async with _channel(traced) as channel:
        token = await _issue(channel, traceparent=TRACEPARENT)
        verify = token_pb2_grpc.TokenServiceStub(channel).Verify
        await verify(token_pb2.VerifyRequest(token=token), metadata=[("traceparent", TRACEPARENT)])
        with pytest.raises(grpc.aio.AioRpcError):  # no admin credential: AdminGate refuses
            await admin_pb2_grpc.AdminServiceStub(channel).CreatePrincipal(
                admin_pb2.CreatePrincipalRequest(name="bob", password=PASSWORD)
            )

    issue = traced.server_span("authority.v1.TokenService/Issue")
    assert issue.attributes is not None
    assert dict(issue.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "authority.v1.TokenService",
        "rpc.method": "Issue",
        "rpc.grpc.status_code": 0,
    }
    assert f"{issue.context.trace_id:032x}" == TRACE_ID
    assert issue.parent is not None and issue.parent.is_remote
    assert f"{issue.parent.span_id:016x}" == PARENT_ID
    assert issue.status.status_code is StatusCode.UNSET

    verified = traced.server_span("authority.v1.TokenService/Verify")
    assert f"{verified.context.trace_id:032x}" == TRACE_ID
    assert verified.attributes is not None and verified.attributes["rpc.grpc.status_code"] == 0
    # No traceparent: a trace of its own. Refused before the handler: traced all the same,
    # as the caller's error (no error status on the server span).
    created, refused = [
        s for s in traced.finished() if s.name == "authority.v1.AdminService/CreatePrincipal"
    ]
    assert created.parent is None and refused.parent is None
    assert refused.context.trace_id not in {created.context.trace_id, issue.context.trace_id}
    assert refused.attributes is not None
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused.status.status_code is StatusCode.UNSET


# -- HTTP ------------------------------------------------------------------------------


async def _client(channel: grpc.aio.Channel) -> str:
    answer = await admin_pb2_grpc.AdminServiceStub(channel).CreateClient(
        admin_pb2.CreateClientRequest(
            client=admin_pb2.Client(
                id="reporting",
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
            )
        ),
        metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
    )
    return str(answer.client_secret)


async def _token_over_http(traced: Traced, secret: str, **headers: str) -> int:
    url = f"http://127.0.0.1:{traced.authority.ports.http}/oauth2/token"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": aiohttp.encode_basic_auth("reporting", secret), **headers},
        ) as response,
    ):
        await response.read()
        return response.status


async def test_an_http_call_is_a_server_span_parented_to_the_callers_traceparent(
    traced: Traced,
) -> None:
    async with _channel(traced) as channel:
        secret = await _client(channel)
    assert await _token_over_http(traced, secret, traceparent=TRACEPARENT) == 200
    assert await _token_over_http(traced, "cs_wrong") == 401

    ok, refused = [s for s in traced.finished() if s.name == "POST /oauth2/token"]
    assert ok.kind is SpanKind.SERVER and ok.attributes is not None
    assert dict(ok.attributes) == {
        "http.request.method": "POST",
        "http.route": "/oauth2/token",
        "url.path": "/oauth2/token",
        "url.scheme": "http",
        "http.response.status_code": 200,
    }
    assert f"{ok.context.trace_id:032x}" == TRACE_ID
    assert ok.parent is not None and f"{ok.parent.span_id:016x}" == PARENT_ID
    assert refused.parent is None and refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == 401
    assert refused.status.status_code is StatusCode.UNSET  # the caller's error


# -- store and Redis -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)
async def test_store_and_redis_calls_are_child_spans_of_the_request(
    traced: Traced, backend: Settings
) -> None:
    async with _channel(traced) as channel:
        await _issue(channel, traceparent=TRACEPARENT)

    issue = traced.server_span("authority.v1.TokenService/Issue")
    children = traced.children(issue)
    store = [s for s in children if s.name.startswith("store.")]
    assert store, [s.name for s in children]
    for span in store:
        assert span.kind is SpanKind.CLIENT and span.attributes is not None
        assert span.context.trace_id == issue.context.trace_id
        assert dict(span.attributes) == {
            "db.system.name": "sqlite",
            "db.operation.name": span.name.removeprefix("store."),
        }
    redis = [s for s in children if s.name.startswith("redis.")]
    if backend.redis_url is None:
        assert not redis
    else:  # the password grant's attempt gate: its scripts, by name only, never their keys
        assert redis, [s.name for s in children]
        for span in redis:
            assert span.attributes is not None
            assert span.attributes["db.system.name"] == "redis"
            assert span.attributes["db.operation.name"] == span.name.removeprefix("redis.")
            assert set(span.attributes) <= {
                "db.system.name",
                "db.operation.name",
                "db.operation.batch.size",
            }
    # The background loops (key manager, outbox relay, revocation poll) call the store
    # too, outside any request: they start no traces of their own.
    assert all(s.parent is not None for s in traced.finished() if s.kind is SpanKind.CLIENT)


# -- OTLP/HTTP export, and the trace id on the request's log line -----------------------


class _Receiver(http.server.ThreadingHTTPServer):
    """A local OTLP/HTTP traces endpoint: decodes every ExportTraceServiceRequest."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Collect)
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        self.arrived = threading.Condition()

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class _Collect(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path == "/v1/traces"
        if ok:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with self.server.arrived:
                self.server.requests.append(request)
                self.server.content_types.append(self.headers["Content-Type"])
                self.server.arrived.notify_all()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_a_real_server_exports_its_spans_over_otlp_http_and_logs_their_trace_id(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
    receiver: _Receiver,
) -> None:
    server = start_server(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_address[1]}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="authority-under-test",
    )
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        token = client.issue_with_password("alice", PASSWORD).access_token
        channel = server.channel()
        token_pb2_grpc.TokenServiceStub(channel).Verify(
            token_pb2.VerifyRequest(token=token), metadata=[("traceparent", TRACEPARENT)]
        )
        channel.close()

    def verify_span() -> Any:
        spans = [s for s in receiver.spans() if s.name == "authority.v1.TokenService/Verify"]
        return spans[0] if spans else None

    with receiver.arrived:
        assert receiver.arrived.wait_for(verify_span, timeout=30)
    span = verify_span()
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.kind == span.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "Verify"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    assert set(receiver.content_types) == {"application/x-protobuf"}
    (resource,) = {
        a.value.string_value
        for request in receiver.requests
        for r in request.resource_spans
        for a in r.resource.attributes
        if a.key == "service.name"
    }
    assert resource == "authority-under-test"

    # The request id and the trace id on one line: the Verify call's rpc line.
    (line,) = server.rpc_lines(method="/authority.v1.TokenService/Verify")
    assert line["request_id"]
    assert line["trace_id"] == span.trace_id.hex()
    assert line["span_id"] == span.span_id.hex()
    # Outside a span (startup, shutdown), lines carry no trace id.
    (ready,) = [e for e in server.events() if e.get("event") == "authority.ready"]
    assert "trace_id" not in ready


@pytest.mark.integration
def test_without_otel_variables_the_rpc_line_has_no_trace_id(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    server = start_server()
    with server.client() as client:
        client.jwks()
    (line,) = server.rpc_lines()
    assert line["request_id"] and "trace_id" not in line and "span_id" not in line


# A Python where the otel extra is not installed: every opentelemetry import fails.
_WITHOUT_OTEL = """
import importlib.abc, sys

class _NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoOpenTelemetry())
"""


@pytest.mark.integration
def test_without_the_extra_the_server_runs_untraced_and_says_so(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WITHOUT_OTEL)
    server = start_server(
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    with server.client() as client:
        client.jwks()
    (line,) = server.rpc_lines()
    (warning,) = [e for e in server.events() if e.get("event") == "tracing.unavailable"]
    assert "authority[otel]" in warning["hint"]
    assert line["code"] == "OK" and "trace_id" not in line
