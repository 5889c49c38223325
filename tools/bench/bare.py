"""The floor: a bare ``grpc.aio`` server process with no interceptors, no logging and no
metrics, serving only ``grpc.health.v1`` Health (the same servicer the authority uses)
and the echo RPC. Every ratio to "bare" in ``make bench`` is to this process, on
asyncio's own loop (what a grpc.aio server runs on unless told otherwise). The same
server on uvloop (``--loop uvloop``, the loop ``authority serve`` picks) is part 0's
same-loop reference: the per-call tax of our own code, with the loop's gain set aside.

Run by ``python -m tools.bench`` (``BareServer``); standalone:
``python -m tools.bench.bare --out F``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authority.runtime import event_loop
from tools.bench.echo import echo_handler
from tools.bench.processes import pinned

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
READY_TIMEOUT = 30.0


async def _serve(out: Path) -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((echo_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fd = sys.stdin.fileno()

    def readable() -> None:  # the parent's end of our stdin closed: it is gone
        if not os.read(fd, 4096):
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "port": port}), encoding="utf-8")
    os.replace(partial, out)
    await stop.wait()
    await server.stop(0.5)


class BareServer:
    """The bare server as a child process (pinned to ``cpus`` where taskset exists), on
    ``loop``: "asyncio" or "uvloop"."""

    def __init__(self, cpus: str | None = None, loop: str = "asyncio") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="authority-bench-bare-")
        self._out = Path(self._dir.name) / "ready.json"
        command = [
            sys.executable,
            "-m",
            "tools.bench.bare",
            f"--out={self._out}",
            f"--loop={loop}",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            pinned(command, cpus), stdin=subprocess.PIPE
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._out.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the bare gRPC server did not start")
            time.sleep(0.05)
        document = json.loads(self._out.read_text(encoding="utf-8"))
        self.pid = int(document["pid"])
        self.port = int(document["port"])

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bare", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="JSON file: pid and port")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    event_loop.run(_serve(args.out), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
