"""Idle and slow peers cannot exhaust the server's descriptors or lock new clients out.

A real server runs with RLIMIT_NOFILE lowered to 512. Peers on loopback then hold more idle
TCP connections than that on both ports, and slowloris peers trickle request headers one
byte at a time. The server must:

- never reach its descriptor limit (each listener has a cap well below it; no EMFILE);
- keep serving the JWKS (HTTP) and Verify (gRPC) to new clients;
- close slowloris connections after the header timeout.

Counts and durations are bounded; everything stays on loopback.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from authority.v1 import token_pb2, token_pb2_grpc
from tests.integration.server import ServerProcess

FD_LIMIT = 512
IDLE_PER_PORT = 280  # 560 in all: more than the whole descriptor limit
SLOWLORIS = 20
HEADER_TIMEOUT = 2.0  # seconds (AUTHORITY_HEADER_TIMEOUT), short for the test
DRIP_INTERVAL = 0.5  # one header byte per interval: well inside the timeout each time
GIVE_UP = 40.0  # a bound on the test, not an assertion on speed

StartServer = Callable[..., ServerProcess]


@contextlib.contextmanager
def lowered_fd_limit(limit: int) -> Iterator[None]:
    """Children started inside inherit a soft RLIMIT_NOFILE of ``limit``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files limit")


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) this connection."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


def _jwks(server: ServerProcess) -> int:
    """A new client's JWKS fetch: the status."""
    with urllib.request.urlopen(f"{server.http}/.well-known/jwks.json", timeout=10) as answer:
        answer.read()
        return int(answer.status)


def _verify_new_client(server: ServerProcess) -> token_pb2.VerifyResponse:
    """A new client's Verify, over a channel of its own (waits for a connection)."""
    with grpc.insecure_channel(server.target) as channel:
        stub = token_pb2_grpc.TokenServiceStub(channel)
        response: token_pb2.VerifyResponse = stub.Verify(
            token_pb2.VerifyRequest(token="not-a-token"), wait_for_ready=True, timeout=GIVE_UP
        )
        return response


class FdSampler:
    """The server's open descriptors, sampled until stopped: the most seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.most = max(self.most, _open_fds(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def limited_server(start_server: StartServer) -> ServerProcess:
    with lowered_fd_limit(FD_LIMIT):
        server = start_server(
            AUTHORITY_HEADER_TIMEOUT=f"{HEADER_TIMEOUT}s", AUTHORITY_IDLE_TIMEOUT="30s"
        )
    assert server.process is not None
    assert _fd_limit_of(server.process.pid) == FD_LIMIT
    return server


def test_slowloris_connections_are_closed_after_the_header_timeout(
    limited_server: ServerProcess,
) -> None:
    server = limited_server
    request = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: authority\r\nX-Padding: "
    peers = [_connect(server.http_port) for _ in range(SLOWLORIS)]
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    sent = 0
    try:
        while len(closed_after) < len(peers) and time.monotonic() - opened < GIVE_UP:
            for index, sock in enumerate(peers):
                if index in closed_after:
                    continue
                if _closed_by_peer(sock):
                    closed_after[index] = time.monotonic() - opened
                    continue
                with contextlib.suppress(OSError):
                    sock.send(request[sent : sent + 1] if sent < len(request) else b"a")
            sent += 1
            time.sleep(DRIP_INTERVAL)
    finally:
        for sock in peers:
            sock.close()
    print(
        f"\nslowloris: {len(closed_after)}/{SLOWLORIS} closed by the server, the last after"
        f" {max(closed_after.values(), default=0):.1f}s (header timeout {HEADER_TIMEOUT}s,"
        f" one byte every {DRIP_INTERVAL}s)"
    )
    assert len(closed_after) == SLOWLORIS, f"still open after {GIVE_UP}s: slowloris holds on"
    # Each was dripping bytes the whole time: only a header deadline closes such a peer.
    assert sent * DRIP_INTERVAL > HEADER_TIMEOUT
    assert _jwks(server) == 200


def test_idle_connections_beyond_the_descriptor_limit_lock_nobody_out(
    limited_server: ServerProcess,
) -> None:
    server = limited_server
    assert server.process is not None
    pid = server.process.pid
    # A client that connected before the flood keeps its connection.
    with grpc.insecure_channel(server.target) as early:
        early_stub = token_pb2_grpc.TokenServiceStub(early)
        early_stub.Verify(token_pb2.VerifyRequest(token="x"), timeout=10)
        baseline = _open_fds(pid)

        idle: list[socket.socket] = []
        with FdSampler(pid) as sampler:
            try:
                for _ in range(IDLE_PER_PORT):
                    idle.append(_connect(server.grpc_port))
                    idle.append(_connect(server.http_port))
                # Every idle socket is still open on our side: the flood is on.
                jwks_status = _jwks(server)
                early_verdict = early_stub.Verify(token_pb2.VerifyRequest(token="x"), timeout=10)
                new_verdict = _verify_new_client(server)
                jwks_again = _jwks(server)
                closed = sum(_closed_by_peer(sock) for sock in idle)
            finally:
                for sock in idle:
                    sock.close()
        held = sampler.most - baseline
        print(
            f"\nfd limit {FD_LIMIT}: {len(idle)} idle connections opened; the server held at"
            f" most {sampler.most} descriptors ({held} above its {baseline} at rest);"
            f" {closed} of the idle connections were closed by the server meanwhile"
        )
        assert jwks_status == 200 and jwks_again == 200
        assert early_verdict.result == token_pb2.VERIFY_RESULT_MALFORMED
        assert new_verdict.result == token_pb2.VERIFY_RESULT_MALFORMED
        assert sampler.most < FD_LIMIT, "the server reached its descriptor limit"
    # It never ran out of descriptors and still serves.
    assert server.process.poll() is None
    logs = "\n".join(server.lines)
    assert "Too many open files" not in logs and "EMFILE" not in logs
    assert _verify_new_client(server).result == token_pb2.VERIFY_RESULT_MALFORMED
    assert _jwks(server) == 200
