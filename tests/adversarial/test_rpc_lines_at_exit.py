"""The rpc line is written in batches (at most FLUSH_DELAY late), so a graceful stop
must not lose the batch: a burst of calls answered right before SIGTERM still gets one
``rpc`` line each, before ``authority.stopped``."""

from __future__ import annotations

from collections.abc import Callable

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.server import ServerProcess

CALLS = 200


def test_every_call_answered_before_sigterm_gets_its_rpc_line(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    channel = server.channel()
    check = health_pb2_grpc.HealthStub(channel).Check
    ids = [f"exit-burst-{n:04d}" for n in range(CALLS)]
    pending = [
        check.future(health_pb2.HealthCheckRequest(), metadata=[("x-request-id", rid)])
        for rid in ids
    ]
    for call in pending:
        assert call.result(timeout=30).status == health_pb2.HealthCheckResponse.SERVING
    channel.close()
    assert server.terminate() == 0  # at once: the last batch is still in the buffer

    events = server.events()
    stopped = next(i for i, e in enumerate(events) if e.get("event") == "authority.stopped")
    logged = {e.get("request_id") for e in events[:stopped] if e.get("event") == "rpc"}
    assert [rid for rid in ids if rid not in logged] == []
