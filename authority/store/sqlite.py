"""The embedded default store: one SQLite file, reached through aiosqlite.

All statements run on one connection (in aiosqlite's worker thread, so the event
loop never blocks), guarded by an asyncio.Lock so tasks queue up instead of
interleaving. Key-ring transactions start with ``BEGIN IMMEDIATE``: SQLite's
write lock then serialises them across every process sharing the file, with
``busy_timeout`` making the others wait instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiosqlite

from authority.domain.audit import AuditQuery, AuditRecord
from authority.domain.clients import Client, GrantType
from authority.domain.errors import (
    AlreadyExists,
    AuthorityError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from authority.domain.events import Event, OutboxEntry
from authority.domain.keys import Algorithm, KeyRecord, KeyUpdate, apply_update
from authority.domain.principals import Principal, canonical_name, name_skeleton
from authority.domain.revocation import (
    FINAL_KINDS,
    Revocation,
    RevocationKind,
    session_revocation,
)
from authority.domain.sessions import RefreshRecord, Session
from authority.domain.webhooks import DeadLetter, Webhook
from authority.store.base import CredentialChange, KeyRingTransaction
from authority.store.migrations import Migration, load_migrations, migrate
from authority.store.principal_names import (
    PRINCIPAL_NAMES_VERSION,
    backfill_principal_names,
    taken_messages,
)

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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_KEY_COLUMNS = (
    "kid, algorithm, public_jwk, wrapped_private_key, kek_id,"
    " published_at, activates_at, retires_at, compromised_at"
)
_PRINCIPAL_COLUMNS = "id, name, password_hash, disabled, created_at"
_PRINCIPAL_READ = _PRINCIPAL_COLUMNS + ", credential_generation, credentials_changed_at"


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


# -- values -------------------------------------------------------------------


def _to_micros(instant: datetime) -> int:
    """Exact integer microseconds, so no precision is lost to floating point."""
    if instant.utcoffset() is None:
        raise InvalidArgument("instants given to the store must be timezone-aware")
    return (instant - _EPOCH) // _MICROSECOND


def _to_optional_micros(instant: datetime | None) -> int | None:
    return None if instant is None else _to_micros(instant)


def _from_micros(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _from_optional_micros(value: int | None) -> datetime | None:
    return None if value is None else _from_micros(value)


def _key_params(key: KeyRecord) -> tuple[Any, ...]:
    """A compromised key's private material is never written."""
    wrapped = None if key.compromised_at is not None else bytes(key.wrapped_private_key)
    return (
        key.kid,
        key.algorithm.value,
        json.dumps(dict(key.public_jwk), sort_keys=True, separators=(",", ":")),
        wrapped,
        key.kek_id,
        _to_micros(key.published_at),
        _to_micros(key.activates_at),
        _to_optional_micros(key.retires_at),
        _to_optional_micros(key.compromised_at),
    )


def _key_from_row(row: Sequence[Any]) -> KeyRecord:
    kid, algorithm, jwk, wrapped, kek_id, published, activates, retires, compromised = row
    return KeyRecord(
        kid=kid,
        algorithm=Algorithm(algorithm),
        public_jwk=json.loads(jwk),
        wrapped_private_key=bytes(wrapped or b""),
        kek_id=kek_id,
        published_at=_from_micros(published),
        activates_at=_from_micros(activates),
        retires_at=_from_optional_micros(retires),
        compromised_at=_from_optional_micros(compromised),
    )


def _principal_from_row(row: Sequence[Any]) -> Principal:
    principal_id, name, password_hash, disabled, created_at, generation, changed_at = row
    return Principal(
        id=principal_id,
        name=name,
        password_hash=password_hash,
        disabled=bool(disabled),
        created_at=_from_micros(created_at),
        generation=generation,
        credentials_changed_at=_from_micros(changed_at) if changed_at else None,
    )


_CLIENT_COLUMNS = (
    "id, secret_hash, grant_types, audiences, scopes, default_scopes,"
    " access_token_ttl, session_idle_ttl, session_absolute_ttl, disabled, created_at,"
    " allowed_claims, allowed_sensitive_claims"
)
_SESSION_COLUMNS = (
    "id, subject, client_id, audience, scope, created_at, idle_ttl, absolute_expires_at, revoked_at"
)
_SESSION_COLUMNS_S = ", ".join("s." + c.strip() for c in _SESSION_COLUMNS.split(","))
_REFRESH_COLUMNS = (
    "token_hash, session_id, issued_at, expires_at, consumed_at, successor_hash, sealed_successor"
)
_REFRESH_COLUMNS_R = ", ".join("r." + c.strip() for c in _REFRESH_COLUMNS.split(","))
_SESSION_COLUMN_BY_KIND = {
    RevocationKind.SESSION: "id",
    RevocationKind.SUBJECT: "subject",
    RevocationKind.CLIENT: "client_id",
}
_INSERT_REVOCATION = (
    "INSERT INTO revocations (kind, value, issued_before, expires_at, recorded_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value)"
)
# A jti or sid revocation is complete once recorded (see FINAL_KINDS): a repeat inserts
# nothing. Subject and client revocations are widened, and only when that changes them.
_RECORD_FINAL_REVOCATION = _INSERT_REVOCATION + " DO NOTHING"
_RECORD_REVOCATION = (
    _INSERT_REVOCATION + " DO UPDATE SET"
    " issued_before = MAX(issued_before, excluded.issued_before),"
    " expires_at = MAX(expires_at, excluded.expires_at),"
    " recorded_at = MAX(recorded_at, excluded.recorded_at)"
    " WHERE excluded.issued_before > revocations.issued_before"
    " OR excluded.expires_at > revocations.expires_at"
)


def _json_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _duration_micros(duration: timedelta) -> int:
    return duration // _MICROSECOND


def _seconds_to_micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _client_params(client: Client) -> tuple[Any, ...]:
    return (
        client.id,
        bytes(client.secret_hash),
        _json_list(sorted(g.value for g in client.grant_types)),
        _json_list(client.audiences),
        _json_list(sorted(client.scopes)),
        _json_list(client.default_scopes),
        _duration_micros(client.access_token_ttl),
        _duration_micros(client.session_idle_ttl),
        _duration_micros(client.session_absolute_ttl),
        int(client.disabled),
        _to_micros(client.created_at),
        _json_list(sorted(client.allowed_claims)),
        _json_list(sorted(client.sensitive_claims)),
    )


def _client_from_row(row: Sequence[Any]) -> Client:
    (client_id, secret_hash, grants, audiences, scopes, defaults, access, idle, absolute,
     disabled, created, allowed_claims, sensitive_claims) = row  # fmt: skip
    return Client(
        id=client_id,
        secret_hash=bytes(secret_hash),
        grant_types=frozenset(GrantType(g) for g in json.loads(grants)),
        audiences=tuple(json.loads(audiences)),
        scopes=frozenset(json.loads(scopes)),
        default_scopes=tuple(json.loads(defaults)),
        access_token_ttl=access * _MICROSECOND,
        session_idle_ttl=idle * _MICROSECOND,
        session_absolute_ttl=absolute * _MICROSECOND,
        disabled=bool(disabled),
        created_at=_from_micros(created),
        allowed_claims=frozenset(json.loads(allowed_claims)),
        sensitive_claims=frozenset(json.loads(sensitive_claims)),
    )


def _session_params(session: Session) -> tuple[Any, ...]:
    return (
        session.id,
        session.subject,
        session.client_id,
        _json_list(session.audience),
        _json_list(session.scope),
        _to_micros(session.created_at),
        _duration_micros(session.idle_ttl),
        _to_micros(session.absolute_expires_at),
        _to_optional_micros(session.revoked_at),
    )


def _session_from_row(row: Sequence[Any]) -> Session:
    session_id, subject, client_id, audience, scope, created, idle, absolute, revoked = row
    return Session(
        id=session_id,
        subject=subject,
        client_id=client_id,
        audience=tuple(json.loads(audience)),
        scope=tuple(json.loads(scope)),
        created_at=_from_micros(created),
        idle_ttl=idle * _MICROSECOND,
        absolute_expires_at=_from_micros(absolute),
        revoked_at=_from_optional_micros(revoked),
    )


def _refresh_from_row(row: Sequence[Any]) -> RefreshRecord:
    token_hash, session_id, issued, expires, consumed, successor, sealed = row
    return RefreshRecord(
        token_hash=bytes(token_hash),
        session_id=session_id,
        issued_at=_from_micros(issued),
        expires_at=_from_micros(expires),
        consumed_at=_from_optional_micros(consumed),
        successor_hash=None if successor is None else bytes(successor),
        sealed_successor=None if sealed is None else bytes(sealed),
    )


# -- outbox and audit log ------------------------------------------------------

_EVENT_COLUMNS = (
    "id, type, aggregate_type, aggregate_id, occurred_at, actor, source_address, request_id, data"
)
_AUDIT_COLUMNS = (
    "event_sequence, event_id, action, actor, target_type, target_id, source_address,"
    " request_id, result, occurred_at, data"
)
_EVENT_TAKEN = {"outbox.id": "an event with this id is already in the outbox"}


async def _insert_events(db: aiosqlite.Connection, events: Sequence[Event]) -> None:
    """Inside the caller's transaction: the events commit or roll back with the change."""
    if not events:
        return
    await db.executemany(
        f"INSERT INTO outbox ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        [
            (
                e.id,
                e.type,
                e.aggregate_type,
                e.aggregate_id,
                _to_micros(e.occurred_at),
                e.actor,
                e.source_address,
                e.request_id,
                e.data_json(),
            )
            for e in events
        ],
    )


def _entry_from_row(row: Sequence[Any]) -> OutboxEntry:
    sequence, event_id, type_, aggregate, aggregate_id, occurred, actor, source, rid, data = row
    event = Event(
        id=event_id,
        type=type_,
        aggregate_type=aggregate,
        aggregate_id=aggregate_id,
        occurred_at=_from_micros(occurred),
        actor=actor,
        source_address=source,
        request_id=rid,
        data=json.loads(data),
    )
    return OutboxEntry(sequence, event)


def _audit_from_row(row: Sequence[Any]) -> AuditRecord:
    sequence, event_id, action, actor, target_type, target_id, source, rid, result, at, data = row
    return AuditRecord(
        event_sequence=sequence,
        event_id=event_id,
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        source_address=source,
        request_id=rid,
        result=result,
        occurred_at=_from_micros(at),
        data=json.loads(data),
    )


@asynccontextmanager
async def _atomic(db: aiosqlite.Connection) -> AsyncIterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``: the write lock up front), so a change
    and its outbox events commit together or not at all."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


async def _select_principal(db: aiosqlite.Connection, principal_id: str) -> Principal | None:
    rows = list(
        await db.execute_fetchall(
            f"SELECT {_PRINCIPAL_READ} FROM principals WHERE id = ?",  # noqa: S608
            (principal_id,),
        )
    )
    return _principal_from_row(rows[0]) if rows else None


async def _upsert_revocation(
    db: aiosqlite.Connection, revocation: Revocation, recorded_at: int
) -> None:
    """Record ``revocation``, widening (never narrowing) one already recorded."""
    await db.execute(
        "INSERT INTO revocations (kind, value, issued_before, expires_at, recorded_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO UPDATE SET"
        " issued_before = MAX(issued_before, excluded.issued_before),"
        " expires_at = MAX(expires_at, excluded.expires_at),"
        " recorded_at = MAX(recorded_at, excluded.recorded_at)",
        (
            revocation.kind.value,
            revocation.value,
            _seconds_to_micros(revocation.issued_before),
            _seconds_to_micros(revocation.expires_at),
            recorded_at,
        ),
    )


async def _insert_refresh(db: aiosqlite.Connection, record: RefreshRecord) -> None:
    await db.execute(
        f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (
            record.token_hash,
            record.session_id,
            _to_micros(record.issued_at),
            _to_micros(record.expires_at),
            _to_optional_micros(record.consumed_at),
            record.successor_hash,
            record.sealed_successor,
        ),
    )


async def _select_keys(db: aiosqlite.Connection) -> list[KeyRecord]:
    rows = await db.execute_fetchall(
        f"SELECT {_KEY_COLUMNS} FROM signing_keys ORDER BY published_at, kid"  # noqa: S608
    )
    return [_key_from_row(row) for row in rows]


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
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            if migration.version not in await self.applied_versions():
                for statement in _statements(migration.sql):
                    await self._db.execute(statement)
                if migration.version == PRINCIPAL_NAMES_VERSION:
                    await self._backfill_principal_names()
                await self._db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(UTC).isoformat()),
                )
            await self._db.execute("COMMIT")
        except BaseException:
            await _rollback(self._db)
            raise


# -- the store ----------------------------------------------------------------


class _SqliteKeyRingTransaction:
    """The key-ring operations, run inside the store's open ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def list_keys(self) -> list[KeyRecord]:
        with _translated():
            return await _select_keys(self._db)

    async def insert_key(self, key: KeyRecord) -> None:
        taken = {"signing_keys.kid": f"a key with kid {key.kid!r} already exists"}
        with _translated(taken):
            await self._db.execute(
                f"INSERT INTO signing_keys ({_KEY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _key_params(key),
            )

    async def update_key(self, update: KeyUpdate) -> None:
        """Reuse ``apply_update`` so the semantics cannot drift from the domain's."""
        with _translated():
            rows = list(
                await self._db.execute_fetchall(
                    f"SELECT {_KEY_COLUMNS} FROM signing_keys WHERE kid = ?",  # noqa: S608
                    (update.kid,),
                )
            )
            if not rows:
                raise NotFound(f"no key with kid {update.kid!r}")
            updated = apply_update(_key_from_row(rows[0]), update)
            await self._db.execute(
                "UPDATE signing_keys SET activates_at = :activates_at, retires_at = :retires_at,"
                " compromised_at = :compromised_at,"
                " wrapped_private_key = CASE WHEN :compromised_at IS NULL"
                " THEN wrapped_private_key END"
                " WHERE kid = :kid",
                {
                    "kid": update.kid,
                    "activates_at": _to_micros(updated.activates_at),
                    "retires_at": _to_optional_micros(updated.retires_at),
                    "compromised_at": _to_optional_micros(updated.compromised_at),
                },
            )

    async def delete_keys(self, kids: tuple[str, ...]) -> None:
        with _translated():
            await self._db.executemany(
                "DELETE FROM signing_keys WHERE kid = ?", [(kid,) for kid in kids]
            )

    async def add_event(self, event: Event) -> None:
        with _translated(_EVENT_TAKEN):
            await _insert_events(self._db, (event,))

    async def rewrap_key(self, kid: str, wrapped_private_key: bytes, kek_id: str) -> None:
        """The ``compromised_at IS NULL`` guard keeps a compromised key without material."""
        with _translated():
            rows = list(
                await self._db.execute_fetchall("SELECT 1 FROM signing_keys WHERE kid = ?", (kid,))
            )
            if not rows:
                raise NotFound(f"no key with kid {kid!r}")
            await self._db.execute(
                "UPDATE signing_keys SET wrapped_private_key = ?, kek_id = ?"
                " WHERE kid = ? AND compromised_at IS NULL",
                (bytes(wrapped_private_key), kek_id, kid),
            )


class SqliteStore:
    """The ``Store`` on one SQLite file (see the module docstring for the locking model)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._closed = False
        self._lock = asyncio.Lock()

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

    @asynccontextmanager
    async def _session(
        self, taken: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, exclusively, with driver errors translated."""
        async with self._lock:
            db = self._connection()
            with _translated(taken):
                yield db

    async def schema_version(self) -> int:
        async with self._session() as db:
            rows = list(await db.execute_fetchall("SELECT MAX(version) FROM schema_migrations"))
        return int(rows[0][0] or 0)

    # -- keys -------------------------------------------------------------

    async def list_keys(self) -> list[KeyRecord]:
        async with self._session() as db:
            return await _select_keys(db)

    async def key_ring_generation(self) -> int:
        async with self._session() as db:
            rows = list(await db.execute_fetchall("SELECT generation FROM key_ring_state"))
        return int(rows[0][0])

    @asynccontextmanager
    async def key_ring_transaction(self) -> AsyncIterator[KeyRingTransaction]:
        """``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never
        fails half-way on a lock upgrade; the generation bump commits with the changes."""
        async with self._lock:
            db = self._connection()
            try:
                with _translated():
                    await db.execute("BEGIN IMMEDIATE")
                yield _SqliteKeyRingTransaction(db)
                with _translated():
                    await db.execute("UPDATE key_ring_state SET generation = generation + 1")
                    await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise

    # -- principals ---------------------------------------------------------

    async def create_principal(self, principal: Principal, *, events: Sequence[Event] = ()) -> None:
        taken = {
            **taken_messages(principal.name),
            "principals.id": f"a principal with id {principal.id!r} already exists",
            **_EVENT_TAKEN,
        }
        async with self._session(taken) as db, _atomic(db):
            await _insert_events(db, events)
            await db.execute(
                f"INSERT INTO principals ({_PRINCIPAL_COLUMNS}, canonical_name, name_skeleton)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    principal.id,
                    principal.name,
                    principal.password_hash,
                    int(principal.disabled),
                    _to_micros(principal.created_at),
                    canonical_name(principal.name),
                    name_skeleton(principal.name),
                ),
            )

    async def get_principal_by_name(self, name: str) -> Principal | None:
        return await self._get_principal("canonical_name", canonical_name(name))

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self._get_principal("id", principal_id)

    async def _get_principal(
        self, column: Literal["id", "canonical_name"], value: str
    ) -> Principal | None:
        """``column`` is one of two literals, never caller input."""
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_PRINCIPAL_READ} FROM principals WHERE {column} = ?",  # noqa: S608
                    (value,),
                )
            )
        return _principal_from_row(rows[0]) if rows else None

    async def update_principal(
        self,
        principal_id: str,
        *,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: Sequence[Event] = (),
    ) -> Principal | None:
        # Update and read back under one lock, in one transaction with the events.
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            changes = password_hash is not None or disabled is not None
            cursor = await db.execute(
                "UPDATE principals SET password_hash = COALESCE(?, password_hash),"
                " disabled = COALESCE(?, disabled),"
                " credential_generation = credential_generation + ? WHERE id = ?",
                (
                    password_hash,
                    None if disabled is None else int(disabled),
                    int(changes),
                    principal_id,
                ),
            )
            if cursor.rowcount > 0:
                await _insert_events(db, events)
            return await _select_principal(db, principal_id)

    async def rehash_password(
        self, principal_id: str, *, generation: int, password_hash: str
    ) -> bool:
        async with self._session() as db, _atomic(db):
            cursor = await db.execute(
                "UPDATE principals SET password_hash = ?"
                " WHERE id = ? AND credential_generation = ?",
                (password_hash, principal_id, generation),
            )
            return cursor.rowcount > 0

    async def change_credentials(
        self,
        principal_id: str,
        *,
        at: datetime,
        password_hash: str | None = None,
        disabled: bool | None = None,
        delete: bool = False,
        revocation: Revocation | None = None,
        events: Sequence[Event] = (),
    ) -> CredentialChange:
        """``BEGIN IMMEDIATE`` serialises this with every session insert of every process
        sharing the file: a login's insert commits wholly before or wholly after."""
        at_micros = _to_micros(at)
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            await db.execute(
                "UPDATE principals SET password_hash = COALESCE(?, password_hash),"
                " disabled = COALESCE(?, disabled),"
                " credential_generation = credential_generation + 1,"
                " credentials_changed_at = MAX(credentials_changed_at, ?) WHERE id = ?",
                (
                    password_hash,
                    None if disabled is None else int(disabled),
                    at_micros,
                    principal_id,
                ),
            )
            principal = await _select_principal(db, principal_id)
            if delete and principal is not None:
                await db.execute("DELETE FROM principals WHERE id = ?", (principal_id,))
            recorded: list[Revocation] = []
            if revocation is not None:
                await _upsert_revocation(db, revocation, at_micros)
                recorded.append(revocation)
                rows = await db.execute_fetchall(
                    "UPDATE sessions SET revoked_at = ?"
                    " WHERE subject = ? AND revoked_at IS NULL RETURNING id",
                    (at_micros, principal_id),
                )
                for (session_id,) in rows:
                    ended = session_revocation(session_id, revocation.expires_at)
                    await _upsert_revocation(db, ended, at_micros)
                    recorded.append(ended)
            if principal is not None or revocation is not None:
                await _insert_events(db, events)
        return CredentialChange(principal, tuple(recorded))

    async def delete_principal(self, principal_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            cursor = await db.execute("DELETE FROM principals WHERE id = ?", (principal_id,))
            if cursor.rowcount > 0:
                await _insert_events(db, events)
            return cursor.rowcount > 0

    # -- clients ------------------------------------------------------------

    async def create_client(self, client: Client, *, events: Sequence[Event] = ()) -> None:
        taken = {"clients.id": f"a client with id {client.id!r} already exists", **_EVENT_TAKEN}
        async with self._session(taken) as db, _atomic(db):
            await _insert_events(db, events)
            await db.execute(
                f"INSERT INTO clients ({_CLIENT_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _client_params(client),
            )

    async def get_client(self, client_id: str) -> Client | None:
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE id = ?",  # noqa: S608
                    (client_id,),
                )
            )
        return _client_from_row(rows[0]) if rows else None

    async def update_client(
        self,
        client_id: str,
        *,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        events: Sequence[Event] = (),
    ) -> Client | None:
        # Update and read back under one lock, in one transaction with the events.
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            cursor = await db.execute(
                "UPDATE clients SET secret_hash = COALESCE(?, secret_hash),"
                " disabled = COALESCE(?, disabled),"
                " allowed_claims = COALESCE(?, allowed_claims),"
                " allowed_sensitive_claims = COALESCE(?, allowed_sensitive_claims) WHERE id = ?",
                (
                    secret_hash,
                    None if disabled is None else int(disabled),
                    None if allowed_claims is None else _json_list(sorted(allowed_claims)),
                    None if sensitive_claims is None else _json_list(sorted(sensitive_claims)),
                    client_id,
                ),
            )
            if cursor.rowcount > 0:
                await _insert_events(db, events)
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE id = ?",  # noqa: S608
                    (client_id,),
                )
            )
        return _client_from_row(rows[0]) if rows else None

    async def delete_client(self, client_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            cursor = await db.execute("DELETE FROM clients WHERE id = ?", (client_id,))
            if cursor.rowcount > 0:
                await _insert_events(db, events)
            return cursor.rowcount > 0

    # -- sessions -------------------------------------------------------------

    async def create_session(
        self,
        session: Session,
        first: RefreshRecord | None,
        *,
        events: Sequence[Event] = (),
        generation: int | None = None,
    ) -> bool:
        """The generation check and the insert share one ``BEGIN IMMEDIATE`` transaction,
        so no credential change commits between them."""
        taken = {"sessions.id": f"a session with id {session.id!r} already exists", **_EVENT_TAKEN}
        async with self._session(taken) as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                if generation is not None:
                    current = list(
                        await db.execute_fetchall(
                            "SELECT 1 FROM principals WHERE id = ?"
                            " AND credential_generation = ? AND disabled = 0",
                            (session.subject, generation),
                        )
                    )
                    if not current:
                        await db.execute("ROLLBACK")
                        return False
                await db.execute(
                    f"INSERT INTO sessions ({_SESSION_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _session_params(session),
                )
                if first is not None:
                    await _insert_refresh(db, first)
                await _insert_events(db, events)
                await db.execute("COMMIT")
                return True
            except BaseException:
                await _rollback(db)
                raise

    async def find_refresh(
        self, token_hash: bytes
    ) -> tuple[RefreshRecord, Session, RefreshRecord | None] | None:
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall(
                    f"SELECT {_REFRESH_COLUMNS_R}, {_SESSION_COLUMNS_S}"  # noqa: S608
                    " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
                    " WHERE r.token_hash = ?",
                    (token_hash,),
                )
            )
            if not rows:
                return None
            record = _refresh_from_row(rows[0][:7])
            session = _session_from_row(rows[0][7:])
            successor = None
            if record.successor_hash is not None:
                successor_rows = list(
                    await db.execute_fetchall(
                        f"SELECT {_REFRESH_COLUMNS} FROM refresh_tokens"  # noqa: S608
                        " WHERE token_hash = ?",
                        (record.successor_hash,),
                    )
                )
                successor = _refresh_from_row(successor_rows[0]) if successor_rows else None
        return record, session, successor

    async def consume_refresh(
        self,
        token_hash: bytes,
        *,
        consumed_at: datetime,
        successor: RefreshRecord,
        sealed: bytes,
        events: Sequence[Event] = (),
    ) -> bool:
        """One conditional UPDATE decides the race; the loser changes nothing."""
        async with self._session(_EVENT_TAKEN) as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                cursor = await db.execute(
                    "UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?,"
                    " sealed_successor = ?"
                    " WHERE token_hash = ? AND consumed_at IS NULL AND EXISTS"
                    " (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id"
                    " AND s.revoked_at IS NULL)",
                    (_to_micros(consumed_at), successor.token_hash, sealed, token_hash),
                )
                if cursor.rowcount != 1:
                    await db.execute("ROLLBACK")
                    return False
                await _insert_refresh(db, successor)
                await _insert_events(db, events)
                await db.execute("COMMIT")
                return True
            except BaseException:
                await _rollback(db)
                raise

    # -- revocations ------------------------------------------------------------

    async def record_revocation(
        self, revocation: Revocation, *, at: datetime, events: Sequence[Event] = ()
    ) -> int | None:
        column = _SESSION_COLUMN_BY_KIND.get(revocation.kind)
        async with self._session(_EVENT_TAKEN) as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                # The conditional insert decides: a repeat changes no row, and then nothing
                # else is written either (race-safe: the write lock orders the contenders).
                cursor = await db.execute(
                    _RECORD_FINAL_REVOCATION
                    if revocation.kind in FINAL_KINDS
                    else _RECORD_REVOCATION,
                    (
                        revocation.kind.value,
                        revocation.value,
                        _seconds_to_micros(revocation.issued_before),
                        _seconds_to_micros(revocation.expires_at),
                        _to_micros(at),
                    ),
                )
                if cursor.rowcount == 0:
                    await _rollback(db)
                    return None
                revoked = 0
                if column is not None:
                    cursor = await db.execute(
                        f"UPDATE sessions SET revoked_at = ?"  # noqa: S608 - column from a fixed map
                        f" WHERE {column} = ? AND revoked_at IS NULL",
                        (_to_micros(at), revocation.value),
                    )
                    revoked = cursor.rowcount
                await _insert_events(db, events)
                await db.execute("COMMIT")
                return revoked
            except BaseException:
                await _rollback(db)
                raise

    async def list_revocations(self, now: float) -> list[Revocation]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT kind, value, issued_before, expires_at FROM revocations"
                " WHERE expires_at > ?",
                (_seconds_to_micros(now),),
            )
        return [
            Revocation(RevocationKind(kind), value, before / 1e6, expires / 1e6)
            for kind, value, before, expires in rows
        ]

    async def revocations_since(self, since: datetime, now: float) -> list[Revocation]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT kind, value, issued_before, expires_at FROM revocations"
                " WHERE recorded_at >= ? AND expires_at > ?",
                (_to_micros(since), _seconds_to_micros(now)),
            )
        return [
            Revocation(RevocationKind(kind), value, before / 1e6, expires / 1e6)
            for kind, value, before, expires in rows
        ]

    async def record_lockout(self, key: str, locked_until: float) -> None:
        async with self._session() as db, _atomic(db):
            await db.execute(
                "INSERT INTO attempt_lockouts (key, locked_until) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET locked_until = max(locked_until, excluded.locked_until)",
                (key, _seconds_to_micros(locked_until)),
            )

    async def lockout_until(self, key: str, now: float) -> float | None:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT locked_until FROM attempt_lockouts WHERE key = ? AND locked_until > ?",
                (key, _seconds_to_micros(now)),
            )
        for (until,) in rows:
            return int(until) / 1e6
        return None

    async def prune(self, now: datetime, *, sealed_before: datetime) -> int:
        async with self._session() as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                revocations = await db.execute(
                    "DELETE FROM revocations WHERE expires_at <= ?", (_to_micros(now),)
                )
                sessions = await db.execute(
                    "DELETE FROM sessions WHERE absolute_expires_at <= ?", (_to_micros(now),)
                )
                await db.execute(
                    "UPDATE refresh_tokens SET sealed_successor = NULL"
                    " WHERE consumed_at < ? AND sealed_successor IS NOT NULL",
                    (_to_micros(sealed_before),),
                )
                await db.execute(
                    "DELETE FROM attempt_lockouts WHERE locked_until <= ?", (_to_micros(now),)
                )
                await db.execute("COMMIT")
                return revocations.rowcount + sessions.rowcount
            except BaseException:
                await _rollback(db)
                raise

    # -- outbox -------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            await _insert_events(db, events)

    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """``BEGIN IMMEDIATE`` serialises claims across every process sharing the file, so
        two relays never lease the same events."""
        now_micros = _to_micros(now)
        async with self._session() as db:
            # An idle relay polls often: look first, so it takes no write lock for nothing.
            pending = await db.execute_fetchall(
                "SELECT 1 FROM outbox WHERE published_at IS NULL"
                " AND (claimed_until IS NULL OR claimed_until <= ?) LIMIT 1",
                (now_micros,),
            )
        if not list(pending):
            return []
        async with self._session() as db, _atomic(db):
            rows = list(
                await db.execute_fetchall(
                    f"SELECT sequence, {_EVENT_COLUMNS} FROM outbox"  # noqa: S608
                    " WHERE published_at IS NULL"
                    " AND (claimed_until IS NULL OR claimed_until <= ?)"
                    " ORDER BY sequence LIMIT ?",
                    (now_micros, limit),
                )
            )
            if rows:
                await db.executemany(
                    "UPDATE outbox SET claimed_until = ? WHERE sequence = ?",
                    [(_to_micros(now + lease), row[0]) for row in rows],
                )
        return [_entry_from_row(row) for row in rows]

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        async with self._session() as db, _atomic(db):
            await db.executemany(
                "UPDATE outbox SET published_at = ?, claimed_until = NULL"
                " WHERE id = ? AND published_at IS NULL",
                [(_to_micros(at), event_id) for event_id in ids],
            )

    async def read_outbox(self, *, after: int = 0, limit: int = 1000) -> list[OutboxEntry]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                f"SELECT sequence, {_EVENT_COLUMNS} FROM outbox"  # noqa: S608
                " WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit),
            )
        return [_entry_from_row(row) for row in rows]

    async def outbox_depth(self) -> int:
        async with self._session() as db:
            rows = list(
                await db.execute_fetchall("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            )
        return int(rows[0][0])

    async def outbox_published(self, ids: Sequence[str]) -> set[str]:
        async with self._session() as db:
            published: set[str] = set()
            for event_id in ids:
                rows = list(
                    await db.execute_fetchall(
                        "SELECT id FROM outbox WHERE id = ? AND published_at IS NOT NULL",
                        (event_id,),
                    )
                )
                published.update(row[0] for row in rows)
        return published

    async def prune_outbox(self, published_before: datetime) -> int:
        async with self._session() as db, _atomic(db):
            cursor = await db.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?",
                (_to_micros(published_before),),
            )
            return cursor.rowcount

    # -- audit log ----------------------------------------------------------------

    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        async with self._session() as db, _atomic(db):
            added = 0
            for r in records:
                cursor = await db.execute(
                    f"INSERT INTO audit_log ({_AUDIT_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        r.event_sequence,
                        r.event_id,
                        r.action,
                        r.actor,
                        r.target_type,
                        r.target_id,
                        r.source_address,
                        r.request_id,
                        r.result,
                        _to_micros(r.occurred_at),
                        json.dumps(dict(r.data), sort_keys=True, separators=(",", ":")),
                    ),
                )
                added += cursor.rowcount
        return added

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Conditions are fixed strings; only the values are parameters."""
        conditions, params = ["event_sequence > ?"], list[object]([query.after_sequence])
        if query.target_id:
            conditions.append("target_id = ?")
            params.append(query.target_id)
        if query.action:
            conditions.append("action = ?")
            params.append(query.action)
        if query.since is not None:
            conditions.append("occurred_at >= ?")
            params.append(_to_micros(query.since))
        if query.until is not None:
            conditions.append("occurred_at < ?")
            params.append(_to_micros(query.until))
        async with self._session() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(conditions)}"  # noqa: S608
                " ORDER BY event_sequence LIMIT ?",
                (*params, query.limit),
            )
        return [_audit_from_row(row) for row in rows]

    # -- webhooks -----------------------------------------------------------------

    async def create_webhook(self, webhook: Webhook, *, events: Sequence[Event] = ()) -> None:
        taken = {"webhooks.id": f"a webhook with id {webhook.id!r} already exists", **_EVENT_TAKEN}
        async with self._session(taken) as db, _atomic(db):
            await db.execute(
                "INSERT INTO webhooks (id, url, event_types, wrapped_secret, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    webhook.id,
                    webhook.url,
                    _json_list(webhook.event_types),
                    bytes(webhook.wrapped_secret),
                    _to_micros(webhook.created_at),
                ),
            )
            await _insert_events(db, events)

    async def rewrap_webhook_secret(self, webhook_id: str, wrapped_secret: bytes) -> None:
        async with self._session() as db:
            await db.execute(
                "UPDATE webhooks SET wrapped_secret = ? WHERE id = ?", (wrapped_secret, webhook_id)
            )

    async def list_webhooks(self) -> list[Webhook]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT id, url, event_types, wrapped_secret, created_at FROM webhooks"
                " ORDER BY created_at, id"
            )
        return [
            Webhook(i, url, tuple(json.loads(types)), bytes(secret), _from_micros(at))
            for i, url, types, secret, at in rows
        ]

    async def delete_webhook(self, webhook_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as db, _atomic(db):
            cursor = await db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
            if cursor.rowcount > 0:
                await _insert_events(db, events)
            return cursor.rowcount > 0

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        async with self._session() as db:
            await db.execute(
                "INSERT INTO webhook_dead_letters"
                " (id, webhook_id, event_id, payload, attempts, last_error, failed_at)"
                " SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)",
                (
                    letter.id,
                    letter.webhook_id,
                    letter.event_id,
                    bytes(letter.payload),
                    letter.attempts,
                    letter.last_error,
                    _to_micros(letter.failed_at),
                    letter.webhook_id,
                ),
            )

    async def list_dead_letters(
        self, *, webhook_id: str = "", limit: int = 100
    ) -> list[DeadLetter]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT id, webhook_id, event_id, payload, attempts, last_error, failed_at"
                " FROM webhook_dead_letters WHERE (? = '' OR webhook_id = ?)"
                " ORDER BY failed_at, id LIMIT ?",
                (webhook_id, webhook_id, limit),
            )
        return [_dead_letter_from_row(row) for row in rows]

    async def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        async with self._session() as db, _atomic(db):
            rows = list(
                await db.execute_fetchall(
                    "SELECT id, webhook_id, event_id, payload, attempts, last_error, failed_at"
                    " FROM webhook_dead_letters WHERE id = ?",
                    (letter_id,),
                )
            )
            await db.execute("DELETE FROM webhook_dead_letters WHERE id = ?", (letter_id,))
        return _dead_letter_from_row(rows[0]) if rows else None


def _dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    letter_id, webhook_id, event_id, payload, attempts, last_error, failed_at = row
    return DeadLetter(
        letter_id,
        webhook_id,
        event_id,
        bytes(payload),
        attempts,
        last_error,
        _from_micros(failed_at),
    )


if TYPE_CHECKING:
    _checked: Store = SqliteStore(Path())  # mypy proves SqliteStore satisfies the protocol
