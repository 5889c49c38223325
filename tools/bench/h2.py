"""h2load (nghttp2's C HTTP/2 load generator, Debian ``nghttp2-client``) sending one
fixed gRPC request: a Python generator would need most of a core itself.

h2load sees HTTP status only, never ``grpc-status`` (a trailer): callers check the
server's own counters for errors (``authority_rpc_requests`` by code).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.bench.processes import pinned

_RATE = re.compile(r"finished in [\d.]+\w*, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded")
_STATUS = re.compile(r"status codes: (\d+) 2xx")


@dataclass(frozen=True)
class H2Run:
    rate: float  # successful requests per second in the measured window
    done: int
    succeeded: int


def h2load() -> str | None:
    return shutil.which("h2load")


def parse_h2load(output: str) -> H2Run:
    """The measured rate and counts, or RuntimeError when the run was not clean."""
    rate, requests, statuses = (
        _RATE.search(output),
        _REQUESTS.search(output),
        _STATUS.search(output),
    )
    if not (rate and requests and statuses):
        raise RuntimeError(f"h2load output not understood:\n{output[-800:]}")
    done, succeeded = int(requests.group(2)), int(requests.group(3))
    if done != succeeded or int(statuses.group(1)) != succeeded or not succeeded:
        raise RuntimeError(f"h2load did not complete cleanly:\n{output[-800:]}")
    return H2Run(float(rate.group(1)), done, succeeded)


def run_h2load(
    port: int,
    path: str,
    body: Path,
    seconds: float,
    *,
    connections: int = 4,
    streams: int = 16,
    warmup: float = 1.0,
    cpus: str | None = None,
) -> H2Run:
    """``connections`` x ``streams`` in flight for ``seconds`` after ``warmup``, on ``cpus``."""
    tool = h2load()
    if tool is None:
        raise RuntimeError("h2load not found")
    command = [
        tool,
        f"--duration={max(100, round(seconds * 1000))}ms",
        f"--warm-up-time={max(0, round(warmup * 1000))}ms",
        f"--clients={connections}",
        f"--max-concurrent-streams={streams}",
        "--threads=1",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--data={body}",
        f"http://127.0.0.1:{port}{path}",
    ]
    output = subprocess.run(  # noqa: S603 - a fixed command line
        pinned(command, cpus),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + warmup + 30,
    ).stdout
    return parse_h2load(output)
