"""The rpc line's direct rendering is the JSON chain's rendering, byte for byte; the
buffered stdout keeps every line and their order; handlers are wrapped once."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.api.handler_wrapping import Handler, Registrar, call_metadata
from authority.api.request_context import REQUEST_ID
from authority.observability import logging as observability_logging
from authority.observability import rpc_line
from authority.observability.logging import (
    _SECRET_SHAPES,
    FLUSH_DELAY,
    STDOUT,
    JsonChain,
    _replace,
    processors,
    scrub,
    sensitive_key,
)
from authority.services.minter import new_refresh_token

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2ln"
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["ipv4:127.0.0.1:4711", "ipv6:[::1]:80", "unix:/tmp/s", JWT, "rt_" + "A" * 43]),
    st.builds(lambda a, b: a + JWT + b, st.text(max_size=5), st.text(max_size=5)),
    st.builds(new_refresh_token),
)
instants = st.integers(min_value=0, max_value=4_000_000_000 * 10**9).map(
    lambda ns: ns - ns % 1000 if ns % 7 else ns - ns % 10**9  # some with no fraction
)


def _iso(now_ns: int) -> str:
    """TimeStamper(fmt="iso", utc=True) for the instant ``now_ns``."""
    second, nanoseconds = divmod(now_ns, 10**9)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=second, microseconds=nanoseconds // 1000
    )
    return moment.isoformat().replace("+00:00", "Z")


def _chain_line(chain: list[Any], now_ns: int, event: dict[str, Any]) -> str:
    """What the configured chain renders, its clock fixed at ``now_ns``."""
    fixed = list(chain)
    fixed[2] = lambda logger, method, e: {**e, "timestamp": _iso(now_ns)}
    line: Any = dict(event)
    for processor in fixed:
        line = processor(None, "info", line)
    assert isinstance(line, str)
    return line + "\n"


@settings(max_examples=300, deadline=None)
@given(
    request_id=texts,
    peer=texts,
    who=st.one_of(st.none(), texts),
    latency_ms=st.floats(min_value=0, max_value=1e6).map(lambda v: round(v, 3)),
    code=st.sampled_from([c.name for c in grpc.StatusCode]),
    now_ns=instants,
    method=st.sampled_from(["/authority.v1.TokenService/Verify", "/x_eyJ.y/Z"]),
)
def test_the_direct_line_is_the_chains_line_byte_for_byte(
    request_id: str,
    peer: str,
    who: str | None,
    latency_ms: float,
    code: str,
    now_ns: int,
    method: str,
) -> None:
    chain = processors("json")
    line = rpc_line.RpcLine(method)

    def both() -> tuple[str | None, str]:
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            direct = line.render(
                JsonChain(chain, (), info=True),
                peer=peer,
                who=who,
                latency_ms=latency_ms,
                code=code,
                now_ns=now_ns,
            )
            event = {
                "method": method,
                "peer": peer,
                "principal": who,
                "latency_ms": latency_ms,
                "code": code,
                "event": "rpc",
            }
            return direct, _chain_line(chain, now_ns, event)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    direct, expected = contextvars.copy_context().run(both)
    assert direct == expected
    assert JWT not in direct

    # What a call writes (the request id alone bound: captured as a tuple, rendered with
    # its batch) is that line too.
    def written() -> tuple[str, str]:
        token = REQUEST_ID.bind(request_id)
        clock, rpc_line._time_ns = rpc_line._time_ns, lambda: now_ns
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                elapsed = latency_ms / 1000
                line.write(
                    JsonChain(chain, (), info=True),
                    peer,
                    who,
                    elapsed,
                    grpc.StatusCode[code],
                    request_id,
                )
                STDOUT.flush()
            event = {
                "method": method,
                "peer": peer,
                "principal": who,
                "latency_ms": round(elapsed * 1000, 3),
                "code": code,
                "event": "rpc",
            }
            return out.getvalue(), _chain_line(chain, now_ns, event)
        finally:
            rpc_line._time_ns = clock
            REQUEST_ID.reset(token)

    direct, expected = contextvars.copy_context().run(written)
    assert direct == expected


def test_the_lines_own_keys_are_not_sensitive() -> None:
    """The direct path writes these keys' values as they are (after scrubbing): the
    chain would too, since none of them names a secret."""
    for key in (*rpc_line.FIELDS, "request_id", "trace_id", "span_id"):
        assert not sensitive_key(key), key


def test_a_context_variable_the_direct_path_cannot_render_falls_back_to_the_chain() -> None:
    def render() -> str | None:
        structlog.contextvars.bind_contextvars(request_id="r", attempt=3)
        return rpc_line.RpcLine("/a.B/C").render(
            JsonChain(processors("json"), (), info=True),
            peer="p",
            who=None,
            latency_ms=1.0,
            code="OK",
            now_ns=0,
        )

    assert contextvars.copy_context().run(render) is None


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(), texts, st.builds(lambda a, b: a + b, texts, st.text())))
def test_the_marker_check_never_skips_a_secret(text: str) -> None:
    assert scrub(text) == _SECRET_SHAPES.sub(_replace, text)


# Latencies in seconds, with the hard cases: exact halves of a thousandth of a
# millisecond (and their neighbours), whole milliseconds, huge ones, negative ones.
_halves = st.integers(min_value=0, max_value=2**31).map(lambda k: (k + 0.5) / 1e6)
elapsed_seconds = st.one_of(
    st.floats(min_value=0, max_value=2e3),
    st.floats(allow_nan=False, allow_infinity=False),
    _halves,
    _halves.map(lambda v: math.nextafter(v, 0)),
    _halves.map(lambda v: math.nextafter(v, 1)),
    st.integers(min_value=0, max_value=10**7).map(lambda k: k / 1e3),
    st.sampled_from([0.0, -0.0, 1e-7, 1073.7418235, 1e12, math.inf, math.nan]),
)


@settings(max_examples=2000, deadline=None)
@given(elapsed=elapsed_seconds)
def test_the_latency_text_is_the_rounded_latencys_repr(elapsed: float) -> None:
    latency_ms = elapsed * 1000
    assert rpc_line.latency_text(latency_ms) == json.dumps(round(latency_ms, 3))


@settings(max_examples=100, deadline=None)
@given(elapsed=st.lists(elapsed_seconds, min_size=1, max_size=20), now_ns=instants)
def test_a_batch_of_lines_has_each_calls_latency_as_the_chain_renders_it(
    elapsed: list[float], now_ns: int
) -> None:
    chain = processors("json")
    line = rpc_line.RpcLine("/grpc.health.v1.Health/Check")

    def written() -> tuple[str, str]:
        token = REQUEST_ID.bind("0123456789abcdef")
        clock, rpc_line._time_ns = rpc_line._time_ns, lambda: now_ns
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                for seconds in elapsed:
                    line.write(
                        JsonChain(chain, (), info=True),
                        "ipv4:127.0.0.1:4711",
                        None,
                        seconds,
                        grpc.StatusCode.OK,
                        "0123456789abcdef",
                    )
                STDOUT.flush()
            expected = "".join(
                _chain_line(
                    chain,
                    now_ns,
                    {
                        "method": "/grpc.health.v1.Health/Check",
                        "peer": "ipv4:127.0.0.1:4711",
                        "principal": None,
                        "latency_ms": round(seconds * 1000, 3),
                        "code": "OK",
                        "event": "rpc",
                    },
                )
                for seconds in elapsed
            )
            return out.getvalue(), expected
        finally:
            rpc_line._time_ns = clock
            REQUEST_ID.reset(token)

    direct, expected = contextvars.copy_context().run(written)
    assert direct == expected


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64 - 1), now_ns=instants)
def test_a_request_id_the_server_made_renders_as_a_callers_would(seed: int, now_ns: int) -> None:
    """The call wrapper marks the ids it made (hex digits, nothing to scrub or escape):
    their lines are rendered without the checks, and are the same bytes."""
    request_id = seed.to_bytes(8, "big").hex()  # what new_request_id() makes
    line = rpc_line.RpcLine("/grpc.health.v1.Health/Check")
    fields = ("ipv4:127.0.0.1:4711", None, 0.123, "OK", request_id, now_ns)
    own = rpc_line.render_records([(line.own_head, *fields)])
    assert own == rpc_line.render_records([(line.head, *fields)])
    assert f'"request_id": "{request_id}"' in own


# -- stdout ---------------------------------------------------------------------------


async def test_buffered_lines_come_out_in_order_and_within_the_delay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    STDOUT.write_later(lambda text: text, ("one\n",))
    STDOUT.write_later(lambda text: text, ("two\n",))
    STDOUT.write_line("three\n")  # a structlog line: the pending ones go first
    assert capsys.readouterr().out == "one\ntwo\nthree\n"
    STDOUT.write_later(lambda text: text, ("four\n",))
    await asyncio.sleep(FLUSH_DELAY * 3)
    assert capsys.readouterr().out == "four\n"


def test_a_line_left_by_a_closed_loop_comes_out_with_the_next_loops(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def write(text: str, wait: float) -> None:
        STDOUT.write_later(lambda line: line, (text,))
        await asyncio.sleep(wait)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(write("left\n", 0))  # its flush timer never fires
    loop.close()
    asyncio.run(write("next\n", FLUSH_DELAY * 3))
    assert capsys.readouterr().out == "left\nnext\n"


def test_without_a_loop_a_buffered_line_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    STDOUT.write_later(lambda text: text, ("now\n",))
    assert capsys.readouterr().out == "now\n"


def test_the_direct_path_is_used_only_while_the_chain_is_structlogs() -> None:
    previous = structlog.get_config()
    try:
        observability_logging.configure_logging(fmt="json", level="info")
        installed = observability_logging.json_chain()
        assert installed is not None and installed.info
        structlog.configure(processors=processors("json"))
        assert observability_logging.json_chain() is None
        observability_logging.configure_logging(fmt="console", level="info")
        assert observability_logging.json_chain() is None
        observability_logging.configure_logging(fmt="json", level="warning")
        quiet = observability_logging.json_chain()
        assert quiet is not None and not quiet.info
    finally:
        structlog.configure(**previous)


# -- registration ---------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, Handler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered[service] = dict(handlers)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def test_every_handler_is_wrapped_once_whichever_way_it_is_registered() -> None:
    wrapped: list[str] = []

    def wrap(method: str, handler: Handler) -> Handler:
        wrapped.append(method)
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary)

    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server = _Server()
    registrar = Registrar(server, wrap)  # type: ignore[arg-type]
    registrar.add_registered_method_handlers("a.S", {"M": handler})
    registrar.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("b.S", {"N": handler}),)
    )
    assert wrapped == ["/a.S/M"]
    # Nothing reaches the server as a registered method (grpc.aio would wait on one
    # pending request per registered method on every call): one table, then the rest.
    assert server.registered == {}
    table, generic = server.generic
    by_name = table.service(_Details("/a.S/M"))
    assert by_name is not None and by_name is not handler
    assert by_name is table.service(_Details("/a.S/M"))
    assert table.service(_Details("/b.S/N")) is None
    first = generic.service(_Details("/b.S/N"))
    assert first is not None and first is generic.service(_Details("/b.S/N"))
    assert generic.service(_Details("/b.S/Unknown")) is None
    assert wrapped == ["/a.S/M", "/b.S/N"]
    with pytest.raises(RuntimeError, match="registered twice"):
        registrar.add_registered_method_handlers("a.S", {"M": handler})


def test_the_lookup_hands_the_calls_metadata_to_its_handler() -> None:
    """The wrapper reads the metadata grpc.aio converted for the lookup, not a copy."""
    server = _Server()
    registrar = Registrar(server, lambda method, handler: handler)  # type: ignore[arg-type]
    registrar.add_registered_method_handlers(
        "a.S", {"M": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    (table,) = server.generic
    details = _Details("/a.S/M")
    details.invocation_metadata = (("x-request-id", "r-7"),)

    def lookup() -> Any:
        table.service(details)
        return call_metadata.get()

    assert contextvars.copy_context().run(lookup) is details.invocation_metadata
    assert contextvars.Context().run(call_metadata.get) is None  # nothing handed over
