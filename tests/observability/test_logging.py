"""Logs: secrets never survive redaction; one line per RPC carrying the request id."""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from authority.api.call_pipeline import CallPipeline
from authority.api.errors import rpc
from authority.api.handler_wrapping import Registrar
from authority.domain.throttle import Throttled
from authority.observability.logging import (
    REDACTED,
    processors,
    redact,
    scrub,
)
from authority.services.admin_credential import new_admin_secret
from authority.services.clients import new_client_secret
from authority.services.minter import new_refresh_token
from authority.services.webhooks import new_webhook_secret
from authority.v1 import admin_pb2
from tests.integration.conftest import start_server  # noqa: F401 - the fixture
from tests.integration.server import ADMIN_TOKEN, ServerProcess

B64URL = string.ascii_letters + string.digits + "-_"
B64 = string.ascii_letters + string.digits + "+/="


def _b64url(min_size: int, max_size: int = 60) -> st.SearchStrategy[str]:
    return st.text(alphabet=B64URL, min_size=min_size, max_size=max_size)


jwts = st.builds(lambda h, p, s: f"eyJ{h}.{p}.{s}", _b64url(8), _b64url(8, 200), _b64url(16, 90))
prefixed = st.builds(
    lambda prefix, body: prefix + body, st.sampled_from(["rt_", "cs_", "adm_"]), _b64url(16, 50)
)
# The code's own secret generators: what a log line could really carry.
GENERATORS = (new_refresh_token, new_client_secret, new_admin_secret, new_webhook_secret)
generated = st.sampled_from(GENERATORS).map(lambda generate: generate())
pems = st.builds(
    lambda kind, lines: f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----",
    st.sampled_from(["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"]),
    st.lists(st.text(alphabet=B64, min_size=16, max_size=64), min_size=1, max_size=5),
)
shaped_secrets = st.one_of(jwts, prefixed, pems)
SENSITIVE_KEYS = [
    "password",
    "new_password",
    "refresh_token",
    "access_token",
    "client_secret",
    "private_key",
    "authorization",
    "kek",
    "admin_token",
    "token",
    "secret",
    "Authorization",
]


def render(event: dict[str, Any]) -> str:
    """What would reach stdout, through the real processor chain."""
    line: Any = event
    for processor in processors("json"):
        line = processor(None, "info", line)
    assert isinstance(line, str)
    return line


def _secret_parts(secret: str) -> list[str]:
    """The pieces that must not survive: the whole, and for a PEM every body line."""
    if secret.startswith("-----BEGIN"):
        return [line for line in secret.splitlines()[1:-1] if len(line) >= 16]
    return [secret]


def _glued(before: str, secret: str) -> bool:
    """A short prefixed value right after a letter, digit or '_' reads as part of a word
    (``short_prepublish``): only generator-shaped bodies are recognised there."""
    return bool(before) and (before[-1].isalnum() or before[-1] == "_")


@settings(max_examples=300, deadline=None)
@given(
    secret=st.one_of(shaped_secrets, generated),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_secret_shapes_never_survive_anywhere_in_a_line(
    secret: str, before: str, after: str
) -> None:
    if _glued(before, secret) and secret.startswith(("rt_", "cs_", "adm_")):
        before += " "  # hand-made short bodies are secrets only where a word starts
    for part in _secret_parts(secret):
        assume(part not in before + after)  # else the "leak" is the test's own text
    text = before + secret + after
    line = render(
        {
            "event": text,
            "detail": text,
            "nested": {"reason": [text, (text,)], "bytes": text.encode()},
            "error": ValueError(text),
        }
    )
    for part in _secret_parts(secret):
        assert part not in line
        assert json.dumps(part)[1:-1] not in line


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(SENSITIVE_KEYS),
    value=st.one_of(st.text(min_size=1), st.binary(min_size=1), st.integers()),
    wrap=st.booleans(),
)
def test_sensitive_keys_lose_their_value_whatever_it_is(key: str, value: Any, wrap: bool) -> None:
    event: dict[str, Any] = {"event": "e", key: value}
    if wrap:
        event = {"event": "e", "request": {key: value, "name": "alice"}}
    out = json.loads(render(event))
    inner = out["request"] if wrap else out
    assert inner[key] == REDACTED
    if wrap:
        assert inner["name"] == "alice"


identifier_words = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    head=st.lists(identifier_words, min_size=1, max_size=3),
    glue=st.sampled_from(["", "_"]),
    prefix=st.sampled_from(["rt", "cs", "adm", "whsec"]),
    tail=st.lists(identifier_words, min_size=1, max_size=4),
    dotted=st.booleans(),
)
def test_identifiers_that_contain_a_prefix_are_left_alone(
    head: list[str], glue: str, prefix: str, tail: list[str], dotted: bool
) -> None:
    """``config.short_prepublish``, ``import_signing_keys``: a prefix glued after a word
    character is part of the word, not the start of a secret."""
    identifier = "_".join(head) + glue + prefix + "_" + "_".join(tail)
    # An identifier that itself starts with a prefix and "_" ("rt_0_rt_000") starts a
    # secret shape by the documented rule (a prefix not glued to a word): another property.
    assume(not identifier.startswith(("rt_", "cs_", "adm_", "whsec_")))
    if dotted:
        identifier = "config." + identifier
    line = json.loads(render({"event": identifier, "detail": f"see {identifier}."}))
    assert line["event"] == identifier
    assert line["detail"] == f"see {identifier}."


@settings(max_examples=300, deadline=None)
@given(generate=st.sampled_from(GENERATORS), before=st.text(max_size=30), after=st.text())
def test_generated_secrets_are_redacted_wherever_they_sit(
    generate: Callable[[], str], before: str, after: str
) -> None:
    """Glued to a word, inside an identifier, in a sentence: a real secret never survives."""
    secret = generate()
    line = render({"event": before + secret + after, "detail": [f"{before}{secret}{after}"]})
    assert secret not in line
    assert secret[secret.index("_") + 1 :] not in line


def test_the_documented_warnings_are_logged_verbatim() -> None:
    for name in ("config.short_prepublish", "import_signing_keys", "keys.import_signing_keys"):
        assert json.loads(render({"event": name}))["event"] == name


def test_metadata_about_secrets_is_kept_and_tokens_get_a_fingerprint() -> None:
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    out = redact(None, "info", {"event": "x", "kek_id": "k1", "token_type": "Bearer", "t": token})
    assert out["kek_id"] == "k1"
    assert out["token_type"] == "Bearer"
    assert re.fullmatch(r"jwt:[0-9a-f]{12}", out["t"])
    # The same token always gets the same fingerprint: lines about it can be correlated.
    assert scrub(token) == out["t"]


def test_a_traceback_is_scanned_too() -> None:
    secret = "rt_" + "S" * 43
    try:
        raise RuntimeError(f"could not refresh {secret}")
    except RuntimeError:
        line = render({"event": "boom", "exc_info": True})
    assert secret not in line
    assert "could not refresh rt_[REDACTED:" in line


# -- the call wrapper, in process --------------------------------------------------------

IDENTITY = (lambda b: b, lambda b: b)


class _Echo:
    """Logs inside the call (the request id must be bound) and can be made to throttle."""

    @rpc
    async def call(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        structlog.get_logger("test").info("inside", secret=request.decode())
        if request == b"throttle":
            raise Throttled(2.5)
        return request


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    previous = structlog.get_config()

    def keep(logger: Any, method: str, event: Any) -> Any:
        lines.append(event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[*processors("json")[:-1], keep],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    yield lines
    structlog.configure(**previous)


async def _stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    for index in range(10_000):
        yield str(index).encode() * 1000
        await asyncio.sleep(0)


@pytest.fixture
async def echo_target() -> Any:
    echo = _Echo()
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Call": grpc.unary_unary_rpc_method_handler(echo.call, *IDENTITY),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream, *IDENTITY),
        },
    )
    server = grpc.aio.server()
    pipeline = CallPipeline(admin=None, is_admin=lambda token: token == "adm_" + "a" * 40)
    Registrar(server, pipeline.wrap).add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def _call(
    target: str, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, dict[str, str]]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/test.Echo/Call", *IDENTITY)(payload, metadata=metadata)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code(), {k: str(v) for k, v in error.trailing_metadata() or ()}
        trailing = await call.trailing_metadata()
        return await call.code(), {k: str(v) for k, v in trailing or ()}


async def test_the_request_id_is_taken_echoed_and_bound_to_every_line(
    captured: list[dict[str, Any]], echo_target: str
) -> None:
    code, trailing = await _call(echo_target, b"hello", (("x-request-id", "req-42"),))
    assert code is grpc.StatusCode.OK
    assert trailing["x-request-id"] == "req-42"
    inside, line = captured
    assert inside["event"] == "inside" and inside["request_id"] == "req-42"
    assert line["event"] == "rpc" and line["request_id"] == "req-42"
    assert line["method"] == "/test.Echo/Call"
    assert line["code"] == "OK"
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert line["principal"] is None
    assert set(line) >= {"timestamp", "level", "event"}


async def test_a_request_id_is_generated_when_missing_and_unique(
    captured: list[dict[str, Any]], echo_target: str
) -> None:
    ids = set()
    for _ in range(3):
        _, trailing = await _call(echo_target, b"x")
        ids.add(trailing["x-request-id"])
    assert len(ids) == 3
    rpc_lines = [line for line in captured if line["event"] == "rpc"]
    assert len(rpc_lines) == 3  # one line per RPC
    assert {line["request_id"] for line in rpc_lines} == ids
    # Nothing leaks between calls: the id is unbound once a call ends.
    assert "request_id" not in structlog.contextvars.get_contextvars()


async def test_errors_keep_the_request_id_next_to_retry_after(
    captured: list[dict[str, Any]], echo_target: str
) -> None:
    admin = "adm_" + "a" * 40
    code, trailing = await _call(
        echo_target,
        b"throttle",
        (("x-request-id", "r-1"), ("authorization", f"Bearer {admin}")),
    )
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailing["x-request-id"] == "r-1"
    assert trailing["retry-after"] == "3"
    # abort sends the status before the handler unwinds: the line may follow the answer.
    for _ in range(100):
        if captured[-1]["event"] == "rpc":
            break
        await asyncio.sleep(0.01)
    line = captured[-1]
    assert line["code"] == "RESOURCE_EXHAUSTED"
    assert line["principal"] == "admin"
    assert admin not in json.dumps(captured, default=str)


async def test_a_stream_cancelled_midway_is_logged_and_the_server_lives_on(
    captured: list[dict[str, Any]], echo_target: str
) -> None:
    """Regression: reading the call (peer) after a cancellation crashed the process."""
    for _ in range(3):
        async with grpc.aio.insecure_channel(echo_target) as channel:
            call = channel.unary_stream("/test.Echo/Stream", *IDENTITY)(b"", metadata=())
            async for _message in call:
                break
            call.cancel()
    for _ in range(100):
        if sum(1 for line in captured if line.get("method") == "/test.Echo/Stream") == 3:
            break
        await asyncio.sleep(0.01)
    streams = [line for line in captured if line.get("method") == "/test.Echo/Stream"]
    assert [line["code"] for line in streams] == ["CANCELLED"] * 3
    assert all(line["peer"].startswith("ipv4:") for line in streams)
    code, _ = await _call(echo_target, b"still there")
    assert code is grpc.StatusCode.OK


# -- the whole lifecycle against a real server: no secret in any line --------------------

PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "another long passphrase 2024"
WRONG_PASSWORD = "wrong guess of a passphrase 7"


@pytest.mark.integration
def test_no_secret_reaches_the_logs_in_a_full_lifecycle(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the imported fixture
) -> None:
    server = start_server(AUTHORITY_LOG_LEVEL="debug")
    secrets: list[str] = [ADMIN_TOKEN, PASSWORD, NEW_PASSWORD, WRONG_PASSWORD]
    with server.client() as client:
        client.create_principal("alice", PASSWORD)
        pair = client.issue_with_password("alice", PASSWORD)
        refreshed = client.refresh(pair.refresh_token)
        secrets += [pair.access_token, pair.refresh_token]
        secrets += [refreshed.access_token, refreshed.refresh_token]
        assert client.verify(refreshed.access_token).result
        client.verify(pair.access_token + "x")  # a bad signature, logged as a Verify line
        with pytest.raises(grpc.RpcError):
            client.issue_with_password("alice", WRONG_PASSWORD)  # a failed login
        client.set_password("alice", NEW_PASSWORD)
        again = client.issue_with_password("alice", NEW_PASSWORD)
        secrets += [again.access_token, again.refresh_token]
        client.revoke(refresh_token=again.refresh_token)
        with pytest.raises(grpc.RpcError):
            client.refresh(again.refresh_token)  # a revoked session: refused, and logged
        client.revoke(access_token=again.access_token)
        created = client.create_client(
            admin_pb2.Client(
                id="svc",
                confidential=True,
                grant_types=[
                    admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE,
                ],
                audiences=["default"],
            )
        )
        secrets.append(created.client_secret)
        machine = client.issue_with_client_credentials("svc", created.client_secret)
        secrets.append(machine.access_token)
        exchanged = client.exchange_token("svc", created.client_secret, "alice")
        secrets.append(exchanged.access_token)
        with pytest.raises(grpc.RpcError):
            client.issue_with_client_credentials("svc", "cs_" + "w" * 43)  # wrong secret
        rotated = client.rotate_client_secret("svc")
        secrets.append(rotated)
        client.get_principal("alice")
        client.list_keys()
        client.rotate_keys()
        client.revoke(subject="alice")
    assert server.terminate() == 0
    secrets.append((server.data_dir / "kek").read_text().strip())

    output = "\n".join(server.lines)
    assert '"event": "rpc"' in output
    for secret in secrets:
        assert secret, "every secret of the run is known"
        assert secret not in output, f"a secret reached the logs: {secret[:6]}..."
    assert "-----BEGIN" not in output
    # And the lines say who did what: the admin, and alice's subject on her logins.
    lines = [e for e in server.events() if e.get("event") == "rpc"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_method.setdefault(line["method"].rsplit("/", 1)[1], []).append(line)
    assert {e["principal"] for e in by_method["CreatePrincipal"]} == {"admin"}
    issued = [e for e in by_method["Issue"] if e["code"] == "OK"]
    assert all(e["principal"] for e in issued)
    assert any(e["code"] == "UNAUTHENTICATED" for e in by_method["Issue"])
    assert all(len(e["request_id"]) >= 8 for e in lines)


@pytest.mark.integration
def test_a_call_names_only_its_own_caller_on_a_shared_connection(
    start_server: Callable[..., ServerProcess],  # noqa: F811 - the fixture
) -> None:
    """The wrapper binds the request id and principal per call and never unbinds them: each
    call runs in a context of its own (grpc.aio's task per call). Were the context shared,
    a Verify after alice's login on the same connection would be logged as hers."""
    server = start_server()
    with server.client() as client:
        client.create_principal("alice", "a perfectly fine passphrase")
        tokens = [
            client.issue_with_password("alice", "a perfectly fine passphrase").access_token
            for _ in range(5)
        ]
        for token in tokens:
            client.verify(token)  # unauthenticated: the line names nobody
    verifies = server.rpc_lines(5, "/authority.v1.TokenService/Verify")
    issues = server.rpc_lines(5, "/authority.v1.TokenService/Issue")
    assert len(verifies) == 5 and len(issues) == 5
    assert all(line["principal"] for line in issues)
    assert {line["principal"] for line in verifies} == {None}
    assert len({line["request_id"] for line in verifies + issues}) == 10
