"""Server processes for the scaling and propagation parts of ``make bench``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

READY_TIMEOUT = 60.0
BENCH_ADMIN_TOKEN = "bench-admin-" + "y" * 40


class Served:
    """``authority serve`` as a child process; ``stop`` always ends it."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], *, workers: int = 1) -> None:
        self.workers = workers
        self.grpc_port = 0
        self.http_port = 0
        self.pids: list[int] = []
        self._ready = threading.Event()
        self._event = "supervisor.ready" if workers > 1 else "authority.ready"
        self._lines: list[str] = []
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "authority.cli", "serve", f"--workers={workers}"],
            env={
                **os.environ,
                "AUTHORITY_DATA_DIR": str(data_dir),
                "AUTHORITY_GRPC_ADDRESS": "127.0.0.1:0",
                "AUTHORITY_HTTP_ADDRESS": "127.0.0.1:0",
                "AUTHORITY_ADMIN_TOKEN": BENCH_ADMIN_TOKEN,
                "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "1000000",
                "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "1000000",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line)
            if self._event in line:
                event = json.loads(line)
                self.grpc_port = int(event["grpc_port"])
                self.http_port = int(event["http_port"])
                self.pids = list(event.get("pids", [self._process.pid]))
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> Served:
        if not self._ready.wait(READY_TIMEOUT) or not self.grpc_port:
            self.stop()
            raise RuntimeError("a bench server did not start:\n" + "".join(self._lines[-20:]))
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        time.sleep(0.05)
