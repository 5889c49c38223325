"""Adversarial: readiness tells the truth about writes (issue 9, item 6).

Observed: with the disk full, every write answered UNAVAILABLE while readiness stayed
200. Here a real server keeps its SQLite database on a tiny tmpfs that the test fills
for real: consecutive failed writes must turn readiness off (gRPC health `readiness`
and HTTP /readyz) and show in /metrics; freeing the disk and one successful write turn
it back on.

Needs root (to mount the tmpfs); skipped with the reason otherwise, and failed under
AUTHORITY_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.server import ServerProcess

THRESHOLD = 3
# Cheap hashing: each write attempt is a principal creation.
FAST = {
    "AUTHORITY_ARGON2_MEMORY_KIB": "1024",
    "AUTHORITY_ARGON2_TIME_COST": "1",
    "AUTHORITY_WRITE_FAILURE_THRESHOLD": str(THRESHOLD),
}


def _unavailable(reason: str) -> None:
    message = f"cannot fill a real filesystem here: {reason}"
    if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for this test (root only)."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        _unavailable("mounting a size-limited tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        _unavailable(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC, for real)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _readiness(server: ServerProcess) -> tuple[int, int]:
    """(gRPC health status of `readiness`, HTTP /readyz status)."""
    with server.channel() as channel:
        status = (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=5)
            .status
        )
    try:
        with urllib.request.urlopen(f"{server.http}/readyz", timeout=5) as response:
            http = response.status
    except urllib.error.HTTPError as error:
        http = error.code
    return status, http


def _eventually(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.2)


def _metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=5) as response:
        return response.read().decode()


def test_a_full_disk_turns_readiness_off_and_a_later_write_back_on(
    tiny_fs: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(tiny_fs / "data", **FAST)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert _readiness(server) == (serving, 200)

    filler = _fill(tiny_fs)
    failures = 0
    with server.client() as client:
        # The WAL may still have room for a few writes; then every write fails.
        for attempt in range(500):
            try:
                client.create_principal(f"user-{attempt}", "correct horse battery")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                failures += 1
                if failures >= THRESHOLD:
                    break
            else:
                failures = 0
        assert failures >= THRESHOLD, "the full disk never made a write fail"

    _eventually(lambda: _readiness(server) == (not_serving, 503), "turned not ready")
    text = _metrics(server)
    assert "authority_writes_healthy 0.0" in text
    assert 'authority_write_failures_consecutive{source="store"}' in text

    filler.unlink()
    with server.client() as client:
        # The first write after the disk is freed succeeds (SQLite rolled the failed
        # ones back) and makes the store healthy again.
        client.create_principal("after", "correct horse battery")
    _eventually(lambda: _readiness(server) == (serving, 200), "turned ready again")
    assert "authority_writes_healthy 1.0" in _metrics(server)
    with contextlib.suppress(Exception):
        server.terminate()
