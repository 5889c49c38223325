"""Server processes for the scaling and propagation parts of ``make bench``.

A server's output goes to a file, not a pipe: at info level it writes one line per RPC,
and reading those in the bench process would take CPU from the load generator.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

READY_TIMEOUT = 60.0
BENCH_ADMIN_TOKEN = "bench-admin-" + "y" * 40


def taskset() -> str | None:
    return shutil.which("taskset")


def pinned(command: list[str], cpus: str | None) -> list[str]:
    """``command`` run on the CPUs ``cpus`` (e.g. "0") where taskset exists, else as is."""
    tool = taskset()
    return [tool, "-c", cpus, *command] if cpus is not None and tool else command


class Served:
    """``authority serve`` as a child process; ``stop`` always ends it."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str],
        *,
        workers: int = 1,
        cpus: str | None = None,
    ) -> None:
        self.workers = workers
        self.grpc_port = 0
        self.http_port = 0
        self.pids: list[int] = []
        self._ready = threading.Event()
        self._event = "supervisor.ready" if workers > 1 else "authority.ready"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="authority-bench-served-", suffix=".log"
        )
        command = [sys.executable, "-m", "authority.cli", "serve", f"--workers={workers}"]
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            pinned(command, cpus),
            env={
                **os.environ,
                "AUTHORITY_DATA_DIR": str(data_dir),
                "AUTHORITY_GRPC_ADDRESS": "127.0.0.1:0",
                "AUTHORITY_HTTP_ADDRESS": "127.0.0.1:0",
                "AUTHORITY_ADMIN_TOKEN": BENCH_ADMIN_TOKEN,
                "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "1000000",
                "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "1000000",
                "AUTHORITY_REVOKE_ATTEMPTS_PER_MINUTE": "1000000",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        """Poll the log for the ready event (or the process's exit)."""
        event_name = self._event.encode()
        with open(self._log.name, "rb") as log:
            while True:
                line = log.readline()
                if not line.endswith(b"\n"):
                    if self._process.poll() is not None:
                        break
                    time.sleep(0.05)
                    log.seek(-len(line), os.SEEK_CUR)
                    continue
                if event_name in line:
                    event = json.loads(line)
                    self.grpc_port = int(event["grpc_port"])
                    self.http_port = int(event["http_port"])
                    self.pids = list(event.get("pids", [self._process.pid]))
                    break
        self._ready.set()

    def log_tail(self, lines: int = 20) -> str:
        with open(self._log.name, "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - 64 * 1024))
            text = log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self) -> Served:
        if not self._ready.wait(READY_TIMEOUT) or not self.grpc_port:
            self.stop()
            raise RuntimeError("a bench server did not start:\n" + self.log_tail())
        return self

    def alive(self) -> bool:
        return self._process.poll() is None

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
        self._log.close()
        time.sleep(0.05)
