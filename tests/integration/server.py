"""Runs `authority serve` as a real child process on ephemeral ports."""

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
from typing import Any

import grpc
from authority_client import AuthorityClient

from tests.processes import check_may_start

ADMIN_TOKEN = "adm_test_" + "x" * 40


class ServerProcess:
    """A server child process. Its JSON log lines are collected for assertions."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.ready_event = "supervisor.ready" if workers > 1 else "authority.ready"
        self.worker_pids: list[int] = []
        self.env = {
            **os.environ,
            "AUTHORITY_DATA_DIR": str(data_dir),
            "AUTHORITY_GRPC_ADDRESS": "127.0.0.1:0",
            "AUTHORITY_HTTP_ADDRESS": "127.0.0.1:0",
            "AUTHORITY_ADMIN_TOKEN": ADMIN_TOKEN,
            "AUTHORITY_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        check_may_start("an authority server")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "authority.cli", "serve", f"--workers={self.workers}"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("server did not become ready:\n" + "\n".join(self.lines))
        if not self.grpc_port:
            raise RuntimeError("server exited before ready:\n" + "\n".join(self.lines))
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            event = self._event(line)
            if event.get("event") == self.ready_event:
                self.grpc_port = int(event["grpc_port"])
                self.http_port = int(event["http_port"])
                self.worker_pids = list(event.get("pids", []))
                self._ready.set()
        self._ready.set()

    @staticmethod
    def _event(line: str) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def events(self) -> list[dict[str, Any]]:
        return [e for e in map(self._event, self.lines) if e]

    def rpc_lines(
        self, count: int = 1, method: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The ``rpc`` lines (of ``method``), once there are ``count`` of them: a server
        flushes them within ``observability.logging.FLUSH_DELAY``, not as a call ends."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                e
                for e in self.events()
                if e.get("event") == "rpc" and method in (None, e.get("method"))
            ]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def client(self, admin: bool = True) -> AuthorityClient:
        return AuthorityClient(self.target, admin_token=ADMIN_TOKEN if admin else None)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        deadline = time.monotonic() + 2
        last = "supervisor.stopped" if self.workers > 1 else "authority.stopped"
        while time.monotonic() < deadline and not any(last in x for x in self.lines):
            time.sleep(0.01)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
