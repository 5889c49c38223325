"""Redis and PostgreSQL instances of a test's own, on free ports, to stop and start at will.

The shared services (``tests.services``) must never be stopped; fault tests start these
instead. A missing binary (or, for PostgreSQL, a missing ``postgres`` OS user or
``runuser``) skips the test with the reason, or fails it when
``AUTHORITY_TEST_REQUIRE_SERVICES=1`` (CI), so a broken image cannot pass silently.
PostgreSQL refuses to run as root, so its binaries run as the ``postgres`` OS user via
``runuser``; that needs root, and without it the test is skipped.

``AUTHORITY_TEST_POSTGRES_BIN`` names the directory holding ``initdb``, ``pg_ctl`` and
``postgres`` (default: the newest ``/usr/lib/postgresql/*/bin``, else ``$PATH``).
Only processes started here are ever stopped, by their own PIDs.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from tests.processes import check_may_start

POSTGRES_USER = "postgres"


def _missing(message: str) -> NoReturn:
    """Skip, or fail when the services are required (CI)."""
    if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, alive: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.02)


# -- Redis ---------------------------------------------------------------------------


class OwnRedis:
    """A redis-server without persistence: a restart comes back empty, like a lost node."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start (again) on the same port."""
        check_may_start("a redis-server of its own")
        assert self.process is None or self.process.poll() is not None, "already running"
        process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.process = process
        _wait_for_port(self.port, lambda: process.poll() is None, "redis-server")

    def stop(self) -> None:
        """SIGTERM our redis-server (by its PID) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def own_redis() -> Iterator[OwnRedis]:
    """A started redis-server of this test's own; stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        _missing(
            "redis-server is not installed (apt-get install redis-server); fault tests need one"
        )
    server = OwnRedis(binary, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- PostgreSQL ----------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    configured = os.environ.get("AUTHORITY_TEST_POSTGRES_BIN")
    candidates = [Path(configured)] if configured else []
    if not configured:

        def version(path: str) -> tuple[int, ...]:
            name = Path(path).parent.name
            return tuple(int(p) for p in name.split(".") if p.isdigit())

        candidates += [
            Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
        ][::-1]
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory owned by ``postgres``, trusting local
    and 127.0.0.1 connections; database ``postgres``, superuser ``postgres``."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root  # also the Unix socket directory
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        command = ["runuser", "-u", POSTGRES_USER, "--", str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{tail}"
            )

    def initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        )

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs (from postmaster.pid), else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> None:
        """Start (again) with the same data directory and port; waits until it accepts."""
        check_may_start("a PostgreSQL of its own")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            # Speed without losing a commit to ``stop -m immediate``: committed WAL is
            # written before the commit returns, only the fsync (for OS crashes) is skipped.
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "-o",
            options,
        )
        _wait_for_port(self.port, lambda: self.pid is not None, "postgres")

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m MODE``; if that fails, SIGKILL the postmaster we started."""
        pid = self.pid
        if pid is None:
            return
        try:
            self._run(
                "pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "20", timeout=30
            )
        except (RuntimeError, subprocess.TimeoutExpired):
            if self.pid == pid:
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pid is not None and time.monotonic() < deadline:
            time.sleep(0.02)


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A started PostgreSQL of this test's own on a free port; stopped and deleted afterwards."""
    bindir = _postgres_bin()
    if bindir is None:
        where = os.environ.get("AUTHORITY_TEST_POSTGRES_BIN") or (
            "/usr/lib/postgresql/*/bin or on PATH"
        )
        _missing(
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where};"
            " install postgresql or set AUTHORITY_TEST_POSTGRES_BIN"
        )
    if os.geteuid() != 0:
        pytest.skip(
            "own PostgreSQL instances need root (PostgreSQL refuses root, so its binaries are"
            " run as the 'postgres' OS user via runuser); run these tests as root"
        )
    if shutil.which("runuser") is None:
        _missing("runuser (util-linux) is not installed; needed to run PostgreSQL as 'postgres'")
    try:
        owner = pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        _missing(f"no '{POSTGRES_USER}' OS user to run PostgreSQL as (install postgresql)")
    # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="authority-pg-"))
    try:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        server = OwnPostgres(bindir, root, free_port())
        server.initdb()
        try:
            server.start()
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
