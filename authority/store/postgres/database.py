"""The PostgreSQL ``Database``: an asyncpg pool, its transactions, and its errors.

Each operation borrows a pooled connection; a write runs in one transaction. No
statement waits longer than ``command_timeout`` and no connection attempt longer than
``connect_timeout``: a store whose server went away answers Unavailable, it never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from types import TracebackType

import asyncpg
from asyncpg.pool import Pool, PoolConnectionProxy

from authority.domain.errors import (
    AlreadyExists,
    AuthorityError,
    Conflict,
    InvalidArgument,
    Unavailable,
)
from authority.store.codec import Codec, NativeCodec
from authority.store.database import Connection, Dialect, Row
from authority.store.migrations import load_migrations, migrate
from authority.store.postgres.dsn import advisory_key, dsn_secrets, quote_identifier
from authority.store.postgres.migrations import _PostgresMigrationTarget

MIGRATIONS: Traversable = files("authority.store") / "sql" / "postgres"
"""This backend's migration files, found next to the module wherever it is installed."""

_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
_IDLE_IN_TRANSACTION_MS = 60_000

# The unique constraints of the schema (named explicitly in the migrations), as the
# "table.column" names the callers' AlreadyExists messages are keyed by (SQLite's names).
_UNIQUE_COLUMNS = {
    "signing_keys_pkey": "signing_keys.kid",
    "principals_pkey": "principals.id",
    "principals_name_key": "principals.name",
    "principals_canonical_name_key": "principals.canonical_name",
    "principals_name_skeleton_key": "principals.name_skeleton",
    "clients_pkey": "clients.id",
    "sessions_pkey": "sessions.id",
    "refresh_tokens_pkey": "refresh_tokens.token_hash",
    "revocations_pkey": "revocations.kind, revocations.value",
    "outbox_id_key": "outbox.id",
    "webhooks_pkey": "webhooks.id",
}

# Failures of the server or of the way to it: retrying later may succeed. Matched by
# class (SQLSTATE), never by message text. TimeoutError (asyncio's too) is an OSError.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.OperatorInterventionError,  # class 57: shutdown, cannot connect now, cancelled
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.InvalidAuthorizationSpecificationError,  # class 28: the credentials are refused
    asyncpg.InvalidCatalogNameError,  # 3D000: the database does not exist
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03: the server ended a stalled session
    asyncpg.InterfaceError,  # a closed pool or connection (programming errors re-raised first)
)
# Client-side errors that are bugs in our code, not outages (ClientConfigurationError and
# the parameter-encoding DataError are ValueErrors, so they are re-raised as well).
_CLIENT_BUGS: tuple[type[BaseException], ...] = (
    ValueError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections keep their session: the store sets no session state (its
    advisory locks are transaction-scoped; no LISTEN, no SET), so asyncpg's default reset
    would only cost a round trip per operation. asyncpg still rolls back an open
    transaction before this runs."""


def _count(status: str) -> int:
    """The row count of an asyncpg command tag such as ``UPDATE 3`` or ``DELETE 0``."""
    return int(status.rpartition(" ")[2])


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """The shared statements' ``?`` marks as PostgreSQL's ``$1, $2, ...`` (no statement
    of the store has a ``?`` inside a string)."""
    first, *rest = sql.split("?")
    return first + "".join(f"${number}{part}" for number, part in enumerate(rest, 1))


class _PostgresConnection:
    """``Connection`` on an asyncpg connection."""

    def __init__(self, conn: PoolConnectionProxy) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        return _count(await self._conn.execute(numbered(sql), *args))

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(numbered(sql), args)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return [tuple(row) for row in await self._conn.fetch(numbered(sql), *args)]

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        row = await self._conn.fetchrow(numbered(sql), *args)
        return None if row is None else tuple(row)


class PostgresDatabase:
    """The ``Database`` on PostgreSQL (see ``authority.store.postgres`` for the model)."""

    codec: Codec = NativeCodec()
    dialect: Dialect = Dialect(
        greatest="GREATEST",
        byte_order=' COLLATE "C"',
        share_lock=" FOR SHARE",
        skip_locked=" FOR UPDATE SKIP LOCKED",
    )

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """No I/O here: ``open`` connects. ``dsn`` may hold a password; it never appears
        in an error message."""
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        # Waiting for a pooled connection may include opening one and a busy pool.
        self._acquire_timeout = connect_timeout + command_timeout
        self._secrets = dsn_secrets(dsn)
        self._migration_lock = advisory_key("migrations", schema)
        self._key_ring_lock = advisory_key("key_ring", schema)
        self._pool: Pool | None = None
        self._closed = False
        self._opening = asyncio.Lock()

    # -- connections --------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool (each connection's search_path is the schema, created if
        missing) and migrate. Opening twice is a no-op."""
        async with self._opening:
            if self._closed:
                raise Unavailable("the store is closed")
            if self._pool is not None:
                return
            if not self._schema or "\x00" in self._schema:
                raise InvalidArgument("the PostgreSQL schema name must be a non-empty string")
            if len(self._schema.encode()) > _MAX_IDENTIFIER_BYTES:
                raise InvalidArgument(
                    f"the PostgreSQL schema name is longer than {_MAX_IDENTIFIER_BYTES} bytes"
                )
            migrations = await asyncio.to_thread(load_migrations, MIGRATIONS)
            with self._translated():
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    command_timeout=self._command_timeout,
                    timeout=self._connect_timeout,
                    server_settings={
                        "search_path": quote_identifier(self._schema),
                        "application_name": "authority",
                        # The server's own limits, for when the client is gone: a statement
                        # never runs past the command timeout, and a replica that stalls
                        # inside a transaction cannot hold the key-ring lock for long.
                        "statement_timeout": str(max(1, round(self._command_timeout * 1000))),
                        "idle_in_transaction_session_timeout": str(_IDLE_IN_TRANSACTION_MS),
                    },
                    reset=_keep_session,
                )
            try:
                with self._translated():
                    async with pool.acquire(timeout=self._acquire_timeout) as conn:
                        target = _PostgresMigrationTarget(conn, self._schema, self._migration_lock)
                        await migrate(target, migrations)
            except BaseException:
                pool.terminate()
                raise
            self._pool = pool

    async def close(self) -> None:
        """Let running operations finish (for a bounded time), then disconnect. Never
        raises: an unreachable server leaves nothing to close gracefully."""
        async with self._opening:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self._acquire_timeout)
        except asyncio.CancelledError:
            pool.terminate()
            raise
        except Exception:  # a timeout or a broken connection: drop what is left
            pool.terminate()

    def _live_pool(self) -> Pool:
        if self._closed:
            raise Unavailable("the store is closed")
        if self._pool is None:
            raise Unavailable("the store is not open")
        return self._pool

    @contextmanager
    def _translated(self, taken: Mapping[str, str] | None = None) -> Iterator[None]:
        """Turn driver errors into domain errors, in one place (see ``_domain_error``)."""
        try:
            yield
        except Exception as exc:
            domain = self._domain_error(exc, taken)
            if domain is None:
                raise
            raise domain from exc

    def _domain_error(
        self, exc: Exception, taken: Mapping[str, str] | None = None
    ) -> AuthorityError | None:
        """The domain error for a driver error, or None to let ``exc`` pass untouched.

        ``taken`` maps a unique column (``"table.column"``, as SQLite's store names it) to
        the AlreadyExists message for it. Messages never include values (PostgreSQL puts
        the duplicate key in its detail) nor the DSN's password. Programming errors (bad
        SQL, bad parameters) are left alone: a bug is not an outage worth retrying.
        """
        if isinstance(exc, AuthorityError):
            return None
        if isinstance(exc, asyncpg.UniqueViolationError):
            column = _UNIQUE_COLUMNS.get(exc.constraint_name or "", "")
            return AlreadyExists((taken or {}).get(column, "the record already exists"))
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            violated = exc.constraint_name or f"SQLSTATE {exc.sqlstate}"
            return AuthorityError(f"the PostgreSQL store rejected a record: it violates {violated}")
        if isinstance(exc, asyncpg.DataError):  # class 22: the server refused a value
            return InvalidArgument(
                f"the PostgreSQL store rejected a value (SQLSTATE {exc.sqlstate})"
            )
        if isinstance(exc, asyncpg.TransactionRollbackError):  # class 40: deadlock, ...
            return Conflict("PostgreSQL aborted the transaction because of a concurrent one; retry")
        if isinstance(exc, asyncpg.ClientConfigurationError):
            return InvalidArgument(
                f"the PostgreSQL connection settings are invalid: {self._redact(str(exc))}"
            )
        if isinstance(exc, _CLIENT_BUGS):
            return None
        if isinstance(exc, _UNAVAILABLE):
            if self._closed:
                return Unavailable("the store is closed")
            return Unavailable(f"PostgreSQL is unavailable: {self._describe(exc)}")
        return None

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return (
                f"no answer in time (connect timeout {self._connect_timeout:g} s,"
                f" command timeout {self._command_timeout:g} s)"
            )
        if isinstance(exc, OSError):
            # Not exc.strerror: asyncio puts the server's address there, and our messages
            # name no hosts (the Redis adapter's do not either).
            code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
            reason = f"cannot connect{f' ({code})' if code else ''}"
        else:
            reason = str(exc) or type(exc).__name__
        return f"{self._redact(reason)} ({type(exc).__name__})"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy]:
        """A pooled connection. Only acquiring and releasing it are translated here: an
        exception from the body is the caller's and passes through untouched."""
        pool = self._live_pool()
        with self._translated():
            # Not acquire(timeout=): asyncpg runs that through wait_for, a task per acquire.
            async with asyncio.timeout(self._acquire_timeout):
                conn = await pool.acquire()
        try:
            yield conn
        except Unavailable:
            # A statement timed out or the link broke: the connection's state is unknown,
            # so drop it (the server rolls back) rather than wait to clean it up.
            with contextlib.suppress(Exception):  # it may be gone (and released) already
                conn.terminate()
                await pool.release(conn)
            raise
        except BaseException:
            with contextlib.suppress(Exception):  # a failed release terminates the connection
                await pool.release(conn)
            raise
        with self._translated():
            await pool.release(conn)

    def translated(
        self, taken: Mapping[str, str] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return self._translated(taken)

    def read(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A pooled connection, with driver errors of the body translated."""
        return _Borrowed(self)

    @asynccontextmanager
    async def write(
        self, taken: Mapping[str, str] | None = None, *, key_ring: bool = False
    ) -> AsyncIterator[Connection]:
        """A pooled connection in one transaction. The key-ring lock is a transaction-scoped
        advisory lock, held until commit or rollback, so replicas take turns."""
        async with self._connection() as conn:
            with self._translated(taken):
                async with conn.transaction():
                    if key_ring:
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._key_ring_lock)
                    yield _PostgresConnection(conn)


class _Borrowed:
    """``PostgresDatabase.read``: what ``_connection`` and ``_translated`` do together, as
    one plain async context manager (every refresh and relay batch borrows through here,
    and two generator-based managers cost more than the pool itself)."""

    __slots__ = ("_conn", "_db", "_pool")

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def __aenter__(self) -> Connection:
        db = self._db
        self._pool = pool = db._live_pool()
        try:
            # Not acquire(timeout=): asyncpg runs that through wait_for, a task per acquire.
            async with asyncio.timeout(db._acquire_timeout):
                self._conn = conn = await pool.acquire()
        except Exception as exc:
            domain = db._domain_error(exc)
            if domain is None:
                raise
            raise domain from exc
        return _PostgresConnection(conn)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pool, conn = self._pool, self._conn
        if exc is None:
            try:
                await pool.release(conn)
            except Exception as error:
                domain = self._db._domain_error(error)
                if domain is None:
                    raise
                raise domain from error
            return
        domain = self._db._domain_error(exc) if isinstance(exc, Exception) else None
        if isinstance(domain or exc, Unavailable):
            # A statement timed out or the link broke: the connection's state is unknown,
            # so drop it (the server rolls back) rather than wait to clean it up.
            with contextlib.suppress(Exception):  # it may be gone (and released) already
                conn.terminate()
                await pool.release(conn)
        else:
            with contextlib.suppress(Exception):  # a failed release terminates the connection
                await pool.release(conn)
        if domain is not None:
            raise domain from exc
