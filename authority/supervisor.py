"""``authority serve --workers N``: N server processes sharing the gRPC and HTTP ports.

Python runs one core per process, so one machine's cores are used by several
processes bound to the same ports with SO_REUSEPORT (the kernel spreads incoming
connections between them). The supervisor holds the ports reserved, starts the
workers, forwards their log lines, restarts a worker that dies (with backoff),
and on SIGTERM/SIGINT asks every worker to drain and stop, killing any that
outlive the grace period.

Workers share all state through the store (and Redis in production): the key
ring, sessions and revocations. Without Redis, a revocation made by one worker
reaches the others within AUTHORITY_REVOCATION_POLL, and rate limits are per worker.

Metrics: the supervisor gives every worker the same fresh PROMETHEUS_MULTIPROC_DIR (a
temporary directory, removed at stop), so any worker's /metrics serves the sum over all
workers (see authority.observability.metrics); exited workers are marked dead there.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from prometheus_client import multiprocess

from authority.config import Settings, parse_address

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
POLL_SECONDS = 0.1


def reserve_port(address: str) -> tuple[socket.socket, str]:
    """Bind (not listen) with SO_REUSEPORT, so the port stays ours while workers join it;
    port 0 becomes a concrete free port every worker then shares."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    bound = holder.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return holder, f"{shown}:{bound}"


_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM us if the supervisor dies, however it dies
    (a SIGKILLed supervisor cannot forward anything), so no worker is ever orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[str] | None = None
    restarts: int = 0
    ready: bool = False
    started_at: float = 0.0
    next_start: float = 0.0
    log_threads: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        self._settings = settings
        self._workers = [Worker(i) for i in range(workers)]
        self._stopping = False
        self._output_lock = threading.Lock()
        self._holders: list[socket.socket] = []
        self._env: dict[str, str] = {}
        self._announced = False
        self._metrics_dir: str | None = None

    # -- output -----------------------------------------------------------------

    def _emit(self, event: str, **fields: object) -> None:
        line = json.dumps({"event": event, "level": "info", **fields})
        with self._output_lock:
            print(line, flush=True)

    def _pump(self, worker: Worker, stream: IO[str]) -> None:
        for line in stream:
            with self._output_lock:
                sys.stdout.write(line)
                sys.stdout.flush()
            if '"authority.ready"' in line:
                worker.ready = True

    # -- workers ----------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        env = {**os.environ, **self._env, "AUTHORITY_WORKER_INDEX": str(worker.index)}
        process = subprocess.Popen(
            [sys.executable, "-m", "authority.cli", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_terminate_with_parent,  # noqa: PLW1509 - one syscall, no locks
        )
        worker.process = process
        worker.ready = False
        worker.started_at = time.monotonic()
        assert process.stdout is not None
        thread = threading.Thread(target=self._pump, args=(worker, process.stdout), daemon=True)
        thread.start()
        worker.log_threads.append(thread)

    def _check(self, worker: Worker) -> None:
        """Restart a worker that exited while we were not stopping."""
        process = worker.process
        if process is None:
            if time.monotonic() >= worker.next_start:
                self._start(worker)
            return
        code = process.poll()
        if code is None:
            if worker.ready and time.monotonic() - worker.started_at > 60:
                worker.restarts = 0  # a worker that stayed up a minute earns a fresh backoff
            return
        delay = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
        self._emit(
            "supervisor.worker_exited",
            worker=worker.index,
            pid=process.pid,
            exit_code=code,
            restart_in_seconds=delay,
        )
        self._metrics_dead(process.pid)
        worker.process = None
        worker.restarts += 1
        worker.next_start = time.monotonic() + delay

    def _metrics_dead(self, pid: int) -> None:
        """Drop an exited worker's live-gauge files (its counters stay in the totals)."""
        if self._metrics_dir is not None:
            multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    # -- main loop ----------------------------------------------------------------

    def run(self) -> int:
        grpc_holder, grpc_address = reserve_port(self._settings.grpc_address)
        http_holder, http_address = reserve_port(self._settings.http_address)
        self._holders = [grpc_holder, http_holder]
        self._env = {
            "AUTHORITY_GRPC_ADDRESS": grpc_address,
            "AUTHORITY_HTTP_ADDRESS": http_address,
            "AUTHORITY_REUSE_PORT": "true",
        }
        self._metrics_dir = tempfile.mkdtemp(prefix="authority-metrics-")
        self._env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        if not self._settings.issuer:
            self._env["AUTHORITY_ISSUER"] = f"{self._settings.http_scheme}://{http_address}"
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        for worker in self._workers:
            self._start(worker)
        try:
            while not self._stopping:
                for worker in self._workers:
                    self._check(worker)
                if not self._announced and all(w.ready for w in self._workers):
                    self._announced = True
                    self._emit(
                        "supervisor.ready",
                        workers=len(self._workers),
                        pids=[w.process.pid for w in self._workers if w.process],
                        grpc_port=int(grpc_address.rpartition(":")[2]),
                        http_port=int(http_address.rpartition(":")[2]),
                    )
                time.sleep(POLL_SECONDS)
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """SIGTERM every worker (each drains within the grace period), then SIGKILL stragglers."""
        self._emit("supervisor.stopping", workers=len(self._workers))
        running = [w.process for w in self._workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace.total_seconds() + 5
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for worker in self._workers:
            for thread in worker.log_threads:
                thread.join(timeout=2)
        for holder in self._holders:
            holder.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        self._emit("supervisor.stopped")
