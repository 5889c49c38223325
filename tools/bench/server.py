"""The benchmark's server process: a real ``Authority`` plus a bare echo RPC, in one process.

Verify and echo share the process, the grpc.aio server, the event loop and the request
message, so the difference between them is the cost of verification alone. The loop is
the one ``authority serve`` runs on (``AUTHORITY_EVENT_LOOP``, uvloop by default). Token pools
are minted here (signing only: nothing is verified, so the verify cache starts empty)
and handed to the load generator in a JSON file written atomically once serving.

Run by ``python -m tools.bench``; standalone: ``python -m tools.bench.server --out F``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from authority.app import Authority
from authority.config import Settings
from authority.domain.clients import GrantType, authorize
from authority.observability.logging import configure_logging
from authority.runtime import event_loop
from authority.services.clients import default_client
from tools.bench.echo import ECHO_METHOD, echo_handler

ADMIN_TOKEN = "bench-admin-" + "x" * 40
__all__ = ["ADMIN_TOKEN", "ECHO_METHOD", "echo_handler", "serve"]


def _write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write then rename, so the reader never sees a half-written file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, path)


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Exit when the parent goes away (its end of our stdin closes), even if it was SIGKILLed."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, readable)


async def serve(out: Path, data_dir: Path, fresh: int, repeat: int, watch_stdin: bool) -> None:
    """Start, mint the pools, publish them, then serve until SIGTERM/SIGINT or stdin EOF."""
    settings = Settings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        # The lifecycle part logs in many times a second from one address on purpose.
        login_attempts_per_minute=10**9,
        source_attempts_per_minute=10**9,
        lockout_threshold=10**9,
        kek=None,
        # The default: one rpc log line per call is part of what every call costs.
        log_level="info",
    )
    settings.validate()
    authority = Authority(settings, extra_handlers=[echo_handler()])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        _stop_on_stdin_eof(loop, stop)
    try:
        await authority.start()
        # Minted directly, under the default client's policy: no session, no store write.
        client = default_client(
            audience=settings.audience,
            access_ttl_seconds=settings.access_token_ttl.total_seconds(),
            idle_ttl_seconds=settings.session_idle_ttl.total_seconds(),
            absolute_ttl_seconds=settings.session_absolute_ttl.total_seconds(),
        )
        grant = authorize(client, GrantType.PASSWORD, audience=(settings.audience,), scope=())
        started = time.perf_counter()
        pools = {
            name: [
                authority.components.minter.access_only(
                    f"bench-{name}-{i}", client, grant, {}
                ).access_token
                for i in range(size)
            ]
            for name, size in (("fresh", fresh), ("repeat", repeat))
        }
        _write_atomically(
            out,
            {
                "pid": os.getpid(),
                "grpc_port": authority.ports.grpc,
                "audience": settings.audience,
                "verify_cache_size": settings.verify_cache_size,
                "event_loop": event_loop.loop_name(loop),
                "mint_seconds": time.perf_counter() - started,
                "fresh": pools["fresh"],
                "repeat": pools["repeat"],
            },
        )
        await stop.wait()
    finally:
        await authority.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.server", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to publish pools to")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--fresh", type=int, default=40_000, help="never-verified tokens")
    parser.add_argument("--repeat", type=int, default=100, help="tokens for the cache-hit phase")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin reaches EOF (parent gone)"
    )
    args = parser.parse_args(argv)
    configure_logging(fmt="json", level="info")
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="authority-bench-"))
        )
        event_loop.run(
            serve(args.out, data_dir, args.fresh, args.repeat, args.watch_stdin),
            Settings.load().event_loop,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
