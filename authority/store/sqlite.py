"""The embedded default store: one SQLite file, reached through aiosqlite.

All statements run on one connection (in aiosqlite's worker thread, so the event
loop never blocks), guarded by an asyncio.Lock so tasks queue up instead of
interleaving. Every write, migrations included, starts with ``BEGIN IMMEDIATE``
(``_atomic``, or ``sqlite_batch`` for the one-trip writes of concurrent calls, which
share one transaction and one commit): it takes SQLite's write lock up front, which
serialises writers across every process sharing the file (``busy_timeout`` makes the
others wait instead of failing), so a transaction never fails half-way on a lock
upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiosqlite

from authority.domain.errors import AlreadyExists, AuthorityError, Unavailable
from authority.store.base import T
from authority.store.codec import Codec, MicrosCodec
from authority.store.database import Connection, Dialect, Row
from authority.store.facets.store import SqlStore
from authority.store.migrations import Migration, load_migrations, migrate
from authority.store.principal_names import PRINCIPAL_NAMES_VERSION, backfill_principal_names
from authority.store.sqlite_batch import Outcome, Write, WriteQueue, run_batch
from authority.store.sqlite_onetrip import OneTrip

if TYPE_CHECKING:
    from authority.store.base import Store

MIGRATIONS: Traversable = files("authority.store") / "sql" / "sqlite"
"""This backend's migration files, found next to the module wherever it is installed."""

_PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # first, so switching to WAL also waits for other writers
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
)
_UNIQUE_ERRORS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})

# -- driver errors ------------------------------------------------------------


@contextmanager
def _translated(taken: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn driver errors into domain errors, in one place.

    ``taken`` maps a unique column (``"table.column"``, as SQLite names it) to the
    AlreadyExists message for it. Programming errors are left alone: a bug in our
    SQL is not an outage worth retrying.
    """
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise _integrity_error(exc, taken or {}) from exc
    except sqlite3.ProgrammingError:
        raise
    except sqlite3.DatabaseError as exc:
        raise Unavailable(f"the SQLite store is unavailable: {exc}") from exc


def _integrity_error(exc: sqlite3.IntegrityError, taken: Mapping[str, str]) -> AuthorityError:
    """SQLite names the violated column but never the value, so its text is safe to use."""
    if exc.sqlite_errorname in _UNIQUE_ERRORS:
        column = str(exc).rpartition(": ")[2]
        return AlreadyExists(taken.get(column, "the record already exists"))
    return AuthorityError(f"the SQLite store rejected a record: {exc}")


async def _execute_when_not_busy(db: aiosqlite.Connection, statement: str) -> None:
    """Retry SQLITE_BUSY for statements ``busy_timeout`` does not cover: switching a new
    file to WAL while another process (a sibling worker) does the same answers BUSY at
    once."""
    delay = 0.01
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        try:
            await db.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorname in {"SQLITE_BUSY", "SQLITE_LOCKED"}
            if not busy or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open; SQLite may already have done so after an error."""
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


@asynccontextmanager
async def _atomic(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """The one write transaction of this backend: ``BEGIN IMMEDIATE`` (the write lock up
    front), ``COMMIT`` when the block ends, ``ROLLBACK`` when it raises (or the commit
    fails), so a change and its outbox events commit together or not at all."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


class _SqliteConnection:
    """``Connection`` on aiosqlite (whose statements already use ``?``)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, *args: object) -> int:
        cursor = await self._db.execute(sql, args)
        return cursor.rowcount

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None:
        await self._db.executemany(sql, args)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return [tuple(row) for row in await self._db.execute_fetchall(sql, args)]

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        found = await self.fetch(sql, *args)
        return found[0] if found else None


# -- migrations ---------------------------------------------------------------


def _statements(script: str) -> list[str]:
    """Split a script into statements, so a migration can run inside our own transaction.

    (``executescript`` would commit first.) ``complete_statement`` knows about
    strings, comments and trigger bodies, so a ';' inside them does not split.
    """
    statements: list[str] = []
    pending = ""
    *pieces, tail = script.split(";")
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if (pending + tail).strip():
        statements.append(pending + tail)  # trailing comments, or a last statement without ';'
    return statements


class _SqliteMigrationTarget:
    """Runs each migration under SQLite's write lock, so racing processes apply it once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def prepare(self) -> None:
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
        )

    async def applied_versions(self) -> set[int]:
        rows = await self._db.execute_fetchall("SELECT version FROM schema_migrations")
        return {int(row[0]) for row in rows}

    async def _backfill_principal_names(self) -> None:
        rows = await self._db.execute_fetchall(
            "SELECT id, name FROM principals ORDER BY created_at, id"
        )
        keys = backfill_principal_names([(row[0], row[1]) for row in rows])
        await self._db.executemany(
            "UPDATE principals SET canonical_name = ?, name_skeleton = ? WHERE id = ?",
            [(k.canonical_name, k.name_skeleton, k.principal_id) for k in keys],
        )

    async def apply(self, migration: Migration) -> None:
        async with _atomic(self._db):
            if migration.version not in await self.applied_versions():
                for statement in _statements(migration.sql):
                    await self._db.execute(statement)
                if migration.version == PRINCIPAL_NAMES_VERSION:
                    await self._backfill_principal_names()
                await self._db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat()),
                )


# -- the database --------------------------------------------------------------


class SqliteDatabase:
    """The ``Database`` on one SQLite file (see the module docstring for the locking model)."""

    codec: Codec = MicrosCodec()
    dialect: Dialect = Dialect(greatest="MAX", byte_order="", share_lock="", skip_locked="")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._closed = False
        self._lock = asyncio.Lock()
        self._writes = WriteQueue(self._run_batch)

    async def open(self) -> None:
        """Create the file privately, connect, and migrate. Opening twice is a no-op."""
        async with self._lock:
            if self._closed:
                raise Unavailable("the store is closed")
            if self._db is not None:
                return
            try:
                migrations = await asyncio.to_thread(self._prepare_files)
            except OSError as exc:
                raise Unavailable(
                    f"cannot create the SQLite database {str(self._path)!r}: {exc.strerror}"
                ) from exc
            with _translated():
                db = await aiosqlite.connect(self._path, isolation_level=None)
            try:
                with _translated():
                    for pragma in _PRAGMAS:
                        await _execute_when_not_busy(db, pragma)
                    await migrate(_SqliteMigrationTarget(db), migrations)
            except BaseException:
                await db.close()
                raise
            self._db = db

    def _prepare_files(self) -> tuple[Migration, ...]:
        """Create the directory (0700) and the file (0600) before SQLite does, so the
        key material is never readable by others; SQLite gives its -wal and -shm files
        the same mode."""
        try:
            self._path.parent.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        else:
            self._path.parent.chmod(0o700)  # mkdir's mode is masked by the umask
        os.close(os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600))
        self._path.chmod(0o600)
        return load_migrations(MIGRATIONS)

    async def close(self) -> None:
        """Wait for running work, then disconnect. Safe to call twice."""
        async with self._lock:
            self._closed = True
            db, self._db = self._db, None
            if db is not None:
                with _translated():
                    await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._closed:
            raise Unavailable("the store is closed")
        if self._db is None:
            raise Unavailable("the store is not open")
        return self._db

    def translated(
        self, taken: Mapping[str, str] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return _translated(taken)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """The connection, exclusively, with driver errors translated."""
        async with self._lock:
            db = self._connection()
            with _translated():
                yield _SqliteConnection(db)

    @asynccontextmanager
    async def write(
        self, taken: Mapping[str, str] | None = None, *, key_ring: bool = False
    ) -> AsyncIterator[Connection]:
        """The connection, exclusively, in one ``_atomic`` transaction (whose write lock
        is also the key-ring lock)."""
        async with self._lock:
            db = self._connection()
            with _translated(taken):
                async with _atomic(db):
                    yield _SqliteConnection(db)

    async def in_thread(
        self,
        work: Callable[[sqlite3.Connection], T],
        taken: Mapping[str, str] | None = None,
        *,
        begin: bool = True,
    ) -> T:
        """``work`` run whole in aiosqlite's thread: one hop for what would be one hop per
        statement. With ``begin`` it runs in a ``BEGIN IMMEDIATE`` transaction shared with
        the writes of concurrent calls (``sqlite_batch``: one hop and one commit for all,
        each in its own savepoint); ``begin=False``: ``work`` opens its own, or only
        reads. ``work`` runs in a copy of the caller's context (the request's id and
        address reach the events it makes)."""
        context = contextvars.copy_context()
        if begin:
            return await self._writes.submit(work, taken, context)
        async with self._lock:
            db = self._connection()
            with _translated(taken):
                result: T = await _run(db)(context.run, work, db._conn)
                return result

    async def _run_batch(self, writes: Sequence[Write[Any]]) -> list[Outcome]:
        async with self._lock:
            db = self._connection()
            with _translated():
                outcomes: list[Outcome] = await _run(db)(run_batch, db._conn, writes, _translated)
                return outcomes


def _run(db: aiosqlite.Connection) -> Callable[..., Awaitable[Any]]:
    """aiosqlite runs a function in its thread only through ``_execute``."""
    return cast(Callable[..., Awaitable[Any]], db._execute)


class SqliteStore(OneTrip, SqlStore):
    """The ``Store`` on one SQLite file."""

    _db: SqliteDatabase

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteDatabase(path))


if TYPE_CHECKING:
    _checked: Store = SqliteStore(Path())  # mypy proves SqliteStore satisfies the protocol
