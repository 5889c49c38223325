"""Adversarial: a wrong or missing KEK never writes (issue 9, item 2).

Real server processes on real SQLite and PostgreSQL. Each attack compares a logical
dump of the whole database (every table, every row, the key-ring generation included)
before and after: a refused start must change nothing at all.

- A server started with the wrong KEK, with a key creation due (or not), exits naming
  the KEK ids (never material) and writes nothing; the correct servers keep working.
- A missing KEK (or admin token) next to a database that holds keys is never generated.
- A missing or zero-length SQLite database next to an installation's KEK is refused
  unless a fresh install is asked for (``--init`` / AUTHORITY_ALLOW_FRESH_INSTALL).
- ``authority kek rotate`` obeys the same rules.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from authority.v1 import admin_pb2, token_pb2
from tests.integration.server import ADMIN_TOKEN, ServerProcess
from tests.services import fresh_database

# A creation becomes due once the signer is older than rotation period - prepublish.
POLICY = {
    "AUTHORITY_KEY_ROTATION_PERIOD": "2h",
    "AUTHORITY_KEY_PREPUBLISH": "1h",
    "AUTHORITY_KEY_CHECK_INTERVAL": "1h",  # running replicas do not act on their own
    "AUTHORITY_ISSUER": "https://authority.test",  # one issuer for every replica
    # The webhook these tests store points at a closed local port (never delivered).
    "AUTHORITY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
}
BACKDATE = timedelta(minutes=90)
PASSWORD = "correct horse battery"


def _kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _kek_id(text: str) -> str:
    secret = base64.b64decode(text)
    digest = hashlib.sha256(b"authority-kek-id:" + secret).digest()
    return base64.urlsafe_b64encode(digest).decode()[:16]


# -- the two backends, seen from outside -----------------------------------------------


class Backend:
    name: str
    env: dict[str, str]

    def dump(self) -> Any:
        raise NotImplementedError

    def execute(self, statement: str) -> None:
        raise NotImplementedError

    def key_kek_ids(self) -> set[str]:
        raise NotImplementedError


class Sqlite(Backend):
    name = "sqlite"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "authority.db"
        self.env = {}

    def _connect(self) -> sqlite3.Connection:
        assert self.path.exists(), "the test expects an existing database"
        return sqlite3.connect(self.path)

    def dump(self) -> list[str]:
        connection = self._connect()
        try:
            return list(connection.iterdump())
        finally:
            connection.close()

    def execute(self, statement: str) -> None:
        connection = self._connect()
        try:
            connection.execute(statement)
            connection.commit()
        finally:
            connection.close()

    def key_kek_ids(self) -> set[str]:
        connection = self._connect()
        try:
            return {row[0] for row in connection.execute("SELECT kek_id FROM signing_keys")}
        finally:
            connection.close()


class Postgres(Backend):
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {"AUTHORITY_DATABASE_URL": url}

    def _run(self, work: Callable[[Any], Any]) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(self.url)
            try:
                return await work(connection)
            finally:
                await connection.close()

        return asyncio.run(run())

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        async def work(connection: Any) -> dict[str, list[tuple[Any, ...]]]:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
            dump = {}
            for row in tables:
                name = row["tablename"]
                rows = await connection.fetch(f'SELECT * FROM "{name}"')
                dump[name] = sorted((tuple(map(repr, r.values())) for r in rows), key=str)
            return dump

        result: dict[str, list[tuple[Any, ...]]] = self._run(work)
        return result

    def execute(self, statement: str) -> None:
        async def work(connection: Any) -> None:
            await connection.execute(statement)

        self._run(work)

    def key_kek_ids(self) -> set[str]:
        async def work(connection: Any) -> set[str]:
            return {r["kek_id"] for r in await connection.fetch("SELECT kek_id FROM signing_keys")}

        result: set[str] = self._run(work)
        return result


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Sqlite(tmp_path / "data")
    else:
        with fresh_database() as url:
            yield Postgres(url)


def _backdate_signer(backend: Backend) -> None:
    """Make a scheduled key creation due: the signer looks 90 minutes old (> 2h - 1h)."""
    if isinstance(backend, Sqlite):
        micros = int(BACKDATE.total_seconds() * 1_000_000)
        backend.execute(
            f"UPDATE signing_keys SET activates_at = activates_at - {micros},"
            f" published_at = published_at - {micros}"
        )
    else:
        backend.execute(
            "UPDATE signing_keys SET activates_at = activates_at - interval '90 minutes',"
            " published_at = published_at - interval '90 minutes'"
        )


def _refused(data_dir: Path, env: dict[str, str]) -> str:
    """Start a server that must refuse: it exits non-zero before ready; its output."""
    server = ServerProcess(data_dir, env)
    try:
        with pytest.raises(RuntimeError, match="exited before ready"):
            server.start(timeout=60)
        assert server.process is not None
        assert server.process.wait(30) != 0
    finally:
        server.kill()
    return "\n".join(server.lines)


def _issue_and_verify(issuer: ServerProcess, verifier: ServerProcess) -> None:
    name = f"user-{os.urandom(4).hex()}"
    with issuer.client() as client:
        client.create_principal(name, PASSWORD)
        token = client.issue_with_password(name, PASSWORD).access_token
    with verifier.client() as client:
        assert client.verify(token).result == token_pb2.VERIFY_RESULT_VALID


def _quiet_dump(backend: Backend, timeout: float = 20.0) -> Any:
    """A dump taken once every outbox event is published."""
    deadline = time.monotonic() + timeout
    while True:
        dump = backend.dump()
        outbox = dump.get("outbox", [])
        if all(row[-1] != "None" for row in outbox) or (time.monotonic() > deadline):
            return dump
        time.sleep(0.1)


def create_webhook(server: ServerProcess) -> None:
    with server.client() as client:
        client.admin.CreateWebhook(
            admin_pb2.CreateWebhookRequest(url="http://127.0.0.1:9/hook"),
            metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
        )


# -- a wrong KEK ---------------------------------------------------------------------


@pytest.mark.parametrize("due", [True, False], ids=["creation-due", "nothing-due"])
def test_a_wrong_kek_start_exits_and_writes_nothing(
    backend: Backend, tmp_path: Path, start_server: Callable[..., ServerProcess], due: bool
) -> None:
    good, wrong = _kek(), _kek()
    data_dir = tmp_path / "data"
    first = start_server(data_dir, AUTHORITY_KEK=good, **POLICY, **backend.env)
    with first.client() as admin:
        admin.create_principal("alice", PASSWORD)
    assert first.terminate() == 0
    if due:
        _backdate_signer(backend)
    before = backend.dump()

    output = _refused(data_dir, {"AUTHORITY_KEK": wrong, **POLICY, **backend.env})

    assert backend.dump() == before  # no key, no event, no generation bump: nothing
    assert f"unknown KEK id {_kek_id(good)!r}" in output
    assert _kek_id(wrong) in output
    assert good not in output and wrong not in output
    # The correct configuration still starts, and does what was due with its own KEK.
    again = start_server(data_dir, AUTHORITY_KEK=good, **POLICY, **backend.env)
    _issue_and_verify(again, again)
    assert backend.key_kek_ids() == {_kek_id(good)}


def test_a_wrong_kek_replica_started_while_a_creation_is_due_breaks_no_replica(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Observed: the wrong replica sealed a new key with its KEK into the shared ring and
    exited; the correctly configured replicas then refused to start."""
    good, wrong = _kek(), _kek()
    with fresh_database() as url:
        backend = Postgres(url)
        env = {"AUTHORITY_KEK": good, **POLICY, **backend.env}
        running = start_server(tmp_path / "a", **env)
        _backdate_signer(backend)
        # The running replica's relay publishes its own start-up events meanwhile: compare
        # from the moment it has nothing left to publish, so any change is the wrong one's.
        before = _quiet_dump(backend)

        output = _refused(tmp_path / "b", {**env, "AUTHORITY_KEK": wrong})

        assert f"unknown KEK id {_kek_id(good)!r}" in output
        assert backend.dump() == before
        # Another correct replica starts (and performs the due creation, under the good
        # KEK); tokens of either verify on the other.
        joining = start_server(tmp_path / "c", **env)
        _issue_and_verify(running, joining)
        _issue_and_verify(joining, running)
        assert backend.key_kek_ids() == {_kek_id(good)}


# -- a missing KEK or admin token ------------------------------------------------------


def test_a_missing_generated_kek_next_to_an_existing_database_is_never_regenerated(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)  # the embedded default: kek generated into data_dir
    assert first.terminate() == 0
    kek_file = data_dir / "kek"
    original_id = _kek_id(kek_file.read_text().strip().replace("-", "+").replace("_", "/") + "=")
    kek_file.unlink()
    backend = Sqlite(data_dir)
    before = backend.dump()

    output = _refused(data_dir, {})

    assert not kek_file.exists()
    assert backend.dump() == before
    assert original_id in output and "no KEK is configured" in output


def test_a_missing_kek_next_to_a_postgres_database_with_keys_is_never_generated(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    good = _kek()
    with fresh_database() as url:
        backend = Postgres(url)
        first = start_server(tmp_path / "a", AUTHORITY_KEK=good, **backend.env)
        assert first.terminate() == 0
        before = backend.dump()

        output = _refused(tmp_path / "b", backend.env)  # no AUTHORITY_KEK at all

        assert not (tmp_path / "b" / "kek").exists()
        assert backend.dump() == before
        assert _kek_id(good) in output


def test_a_missing_admin_token_next_to_an_existing_database_is_never_generated(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir, AUTHORITY_ADMIN_TOKEN="")  # generated into data_dir
    assert first.terminate() == 0
    (data_dir / "admin-token").unlink()
    before = Sqlite(data_dir).dump()

    output = _refused(data_dir, {"AUTHORITY_ADMIN_TOKEN": ""})

    assert not (data_dir / "admin-token").exists()
    assert Sqlite(data_dir).dump() == before
    assert "no admin credential" in output


# -- a lost database -------------------------------------------------------------------


def _installation(data_dir: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(data_dir)
    with server.client() as admin:
        admin.create_principal("alice", PASSWORD)
    assert server.terminate() == 0


def _remove_database(data_dir: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"authority.db{suffix}").unlink(missing_ok=True)


def test_a_missing_database_next_to_an_existing_kek_is_refused(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Observed: it silently started a new installation with every account gone."""
    data_dir = tmp_path / "data"
    _installation(data_dir, start_server)
    _remove_database(data_dir)

    output = _refused(data_dir, {})

    assert not (data_dir / "authority.db").exists()
    assert "--init" in output and "AUTHORITY_ALLOW_FRESH_INSTALL" in output


def test_a_zero_length_database_is_refused(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    _installation(data_dir, start_server)
    _remove_database(data_dir)
    (data_dir / "authority.db").write_bytes(b"")

    output = _refused(data_dir, {"AUTHORITY_KEK": _kek()})  # even with a configured KEK

    assert (data_dir / "authority.db").stat().st_size == 0
    assert "empty" in output


def test_a_fresh_install_over_a_lost_database_needs_init(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    _installation(data_dir, start_server)
    _remove_database(data_dir)

    # `authority serve --init`: the operator asks for it, explicitly.
    env = {**os.environ, "AUTHORITY_DATA_DIR": str(data_dir), "AUTHORITY_LOG_FORMAT": "json"}
    env.update(AUTHORITY_GRPC_ADDRESS="127.0.0.1:0", AUTHORITY_HTTP_ADDRESS="127.0.0.1:0")
    env["AUTHORITY_ADMIN_TOKEN"] = ADMIN_TOKEN
    process = subprocess.Popen(
        [sys.executable, "-m", "authority.cli", "serve", "--init"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "authority.ready" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(60) and process.poll() is None, "".join(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    # The new installation is empty, as asked; later starts need no flag.
    server = start_server(data_dir)
    with server.client() as admin, pytest.raises(grpc.RpcError) as missing:
        admin.get_principal("alice")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_first_start_on_an_empty_data_dir_just_works(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(tmp_path / "new" / "data", AUTHORITY_ADMIN_TOKEN="")
    assert (tmp_path / "new" / "data" / "kek").exists()
    assert (tmp_path / "new" / "data" / "admin-token").exists()
    assert server.terminate() == 0


# -- the CLI ---------------------------------------------------------------------------


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authority.cli", *args],
        env={**os.environ, "AUTHORITY_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kek_rotate_with_a_wrong_kek_changes_nothing(
    backend: Backend, tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    good, wrong = _kek(), _kek()
    data_dir = tmp_path / "data"
    server = start_server(
        data_dir,
        AUTHORITY_KEK=good,
        AUTHORITY_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
        **backend.env,
    )
    create_webhook(server)
    assert server.terminate() == 0
    before = backend.dump()

    refused = _cli(data_dir, {"AUTHORITY_KEK": wrong, **backend.env}, "kek", "rotate")

    assert refused.returncode != 0
    assert _kek_id(good) in refused.stderr and good not in refused.stderr
    assert backend.dump() == before


def test_kek_rotate_never_creates_a_missing_database(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    _installation(data_dir, start_server)
    _remove_database(data_dir)

    refused = _cli(data_dir, {}, "kek", "rotate")

    assert refused.returncode != 0
    assert not (data_dir / "authority.db").exists()
    migrate = _cli(data_dir, {}, "migrate")
    assert migrate.returncode != 0 and "--init" in migrate.stderr
    assert not (data_dir / "authority.db").exists()
