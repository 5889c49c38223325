"""The production store: PostgreSQL, shared by every replica, reached through an asyncpg pool.

Each operation borrows a pooled connection; statements that must change together run
in one transaction. Races are decided by PostgreSQL itself: a refresh token is consumed
by one conditional ``UPDATE`` (row locks make the loser see the winner's change), and
key-ring transactions (and migrations) take a transaction-scoped advisory lock, so
they serialise across every process sharing the database.

Every connection's ``search_path`` names only the store's schema, so one database can
hold several independent stores (the contract tests use a fresh schema per test).
Advisory-lock keys are derived from the schema name for the same reason.

No statement waits longer than ``command_timeout`` and no connection attempt longer than
``connect_timeout``: a store whose server went away answers Unavailable, it never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from authority.domain.audit import AuditQuery, AuditRecord
from authority.domain.clients import Client, GrantType
from authority.domain.errors import (
    AlreadyExists,
    AuthorityError,
    Conflict,
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

MIGRATIONS: Traversable = files("authority.store") / "sql" / "postgres"
"""This backend's migration files, found next to the module wherever it is installed."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
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

_KEY_COLUMNS = (
    "kid, algorithm, public_jwk, wrapped_private_key, kek_id,"
    " published_at, activates_at, retires_at, compromised_at"
)
_PRINCIPAL_COLUMNS = "id, name, password_hash, disabled, created_at"
_PRINCIPAL_READ = _PRINCIPAL_COLUMNS + ", credential_generation, credentials_changed_at"
_CLIENT_COLUMNS = (
    "id, secret_hash, grant_types, audiences, scopes, default_scopes,"
    " access_token_ttl, session_idle_ttl, session_absolute_ttl, disabled, created_at,"
    " allowed_claims, allowed_sensitive_claims"
)
_SESSION_COLUMNS = (
    "id, subject, client_id, audience, scope, created_at, idle_ttl, absolute_expires_at, revoked_at"
)
_REFRESH_COLUMNS = (
    "token_hash, session_id, issued_at, expires_at, consumed_at, successor_hash, sealed_successor"
)


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


_SESSION_COLUMN_BY_KIND = {
    RevocationKind.SESSION: "id",
    RevocationKind.SUBJECT: "subject",
    RevocationKind.CLIENT: "client_id",
}
_INSERT_REVOCATION = (
    "INSERT INTO revocations (kind, value, issued_before, expires_at, recorded_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value)"
)
# A jti or sid revocation is complete once recorded (see FINAL_KINDS): a repeat inserts
# nothing. Subject and client revocations are widened, and only when that changes them.
_RECORD_FINAL_REVOCATION = _INSERT_REVOCATION + " DO NOTHING RETURNING true"
_RECORD_REVOCATION = (
    _INSERT_REVOCATION + " DO UPDATE SET"
    " issued_before = GREATEST(revocations.issued_before, EXCLUDED.issued_before),"
    " expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at),"
    " recorded_at = GREATEST(revocations.recorded_at, EXCLUDED.recorded_at)"
    " WHERE EXCLUDED.issued_before > revocations.issued_before"
    " OR EXCLUDED.expires_at > revocations.expires_at"
    " RETURNING true"
)


# -- connection settings ---------------------------------------------------------


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (in the authority or in a ``password=`` parameter),
    for messages and logs. A DSN that does not parse is replaced as a whole."""
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        query = "&".join(
            f"{name}=***" if name.lower() == "password" else f"{name}={value}"
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<a malformed database URL>"


def _dsn_secrets(dsn: str) -> tuple[str, ...]:
    """Every form in which the DSN's password could appear in a driver message."""
    secrets = {dsn}
    with contextlib.suppress(ValueError):
        parts = urlsplit(dsn)
        if parts.password:
            secrets |= {parts.password, unquote(parts.password)}
        secrets |= {
            value
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
            if name.lower() == "password" and value
        }
    return tuple(sorted((s for s in secrets if s), key=len, reverse=True))


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _advisory_key(purpose: str, schema: str) -> int:
    """A fixed 64-bit advisory-lock key per purpose and schema, the same in every process
    (advisory locks are per database, and several stores may share one database)."""
    digest = hashlib.sha256(f"authority:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _keep_session(conn: Any) -> None:
    """Released connections keep their session: the store sets no session state (its
    advisory locks are transaction-scoped; no LISTEN, no SET), so asyncpg's default reset
    would only cost a round trip per operation. asyncpg still rolls back an open
    transaction before this runs."""


def _count(status: str) -> int:
    """The row count of an asyncpg command tag such as ``UPDATE 3`` or ``DELETE 0``."""
    return int(status.rpartition(" ")[2])


# -- values ----------------------------------------------------------------------


def _instant(value: datetime) -> datetime:
    """asyncpg would read a naive datetime as local time; refuse it, as SQLite's store does."""
    if value.utcoffset() is None:
        raise InvalidArgument("instants given to the store must be timezone-aware")
    return value


def _optional_instant(value: datetime | None) -> datetime | None:
    return None if value is None else _instant(value)


def _from_seconds(seconds: float) -> datetime:
    """Epoch seconds as an instant, rounded to the microsecond exactly like SQLite's store."""
    return _EPOCH + round(seconds * 1_000_000) * _MICROSECOND


def _to_seconds(instant: datetime) -> float:
    return ((instant - _EPOCH) // _MICROSECOND) / 1e6


def _key_params(key: KeyRecord) -> tuple[Any, ...]:
    """A compromised key's private material is never written."""
    wrapped = None if key.compromised_at is not None else bytes(key.wrapped_private_key)
    return (
        key.kid,
        key.algorithm.value,
        json.dumps(dict(key.public_jwk), sort_keys=True, separators=(",", ":")),
        wrapped,
        key.kek_id,
        _instant(key.published_at),
        _instant(key.activates_at),
        _optional_instant(key.retires_at),
        _optional_instant(key.compromised_at),
    )


def _key_from_row(row: Sequence[Any]) -> KeyRecord:
    kid, algorithm, jwk, wrapped, kek_id, published, activates, retires, compromised = row
    return KeyRecord(
        kid=kid,
        algorithm=Algorithm(algorithm),
        public_jwk=json.loads(jwk),
        wrapped_private_key=bytes(wrapped or b""),
        kek_id=kek_id,
        published_at=published,
        activates_at=activates,
        retires_at=retires,
        compromised_at=compromised,
    )


def _principal_from_row(row: Sequence[Any]) -> Principal:
    principal_id, name, password_hash, disabled, created_at, generation, changed_at = row
    return Principal(
        id=principal_id,
        name=name,
        password_hash=password_hash,
        disabled=bool(disabled),
        created_at=created_at,
        generation=generation,
        credentials_changed_at=changed_at,
    )


def _client_params(client: Client) -> tuple[Any, ...]:
    return (
        client.id,
        bytes(client.secret_hash),
        sorted(g.value for g in client.grant_types),
        list(client.audiences),
        sorted(client.scopes),
        list(client.default_scopes),
        client.access_token_ttl,
        client.session_idle_ttl,
        client.session_absolute_ttl,
        client.disabled,
        _instant(client.created_at),
        sorted(client.allowed_claims),
        sorted(client.sensitive_claims),
    )


def _client_from_row(row: Sequence[Any]) -> Client:
    (client_id, secret_hash, grants, audiences, scopes, defaults, access, idle, absolute,
     disabled, created, allowed_claims, sensitive_claims) = row  # fmt: skip
    return Client(
        id=client_id,
        secret_hash=bytes(secret_hash),
        grant_types=frozenset(GrantType(g) for g in grants),
        audiences=tuple(audiences),
        scopes=frozenset(scopes),
        default_scopes=tuple(defaults),
        access_token_ttl=access,
        session_idle_ttl=idle,
        session_absolute_ttl=absolute,
        disabled=bool(disabled),
        created_at=created,
        allowed_claims=frozenset(allowed_claims),
        sensitive_claims=frozenset(sensitive_claims),
    )


def _session_params(session: Session) -> tuple[Any, ...]:
    return (
        session.id,
        session.subject,
        session.client_id,
        list(session.audience),
        list(session.scope),
        _instant(session.created_at),
        session.idle_ttl,
        _instant(session.absolute_expires_at),
        _optional_instant(session.revoked_at),
    )


def _session_from_row(row: Sequence[Any]) -> Session:
    session_id, subject, client_id, audience, scope, created, idle, absolute, revoked = row
    return Session(
        id=session_id,
        subject=subject,
        client_id=client_id,
        audience=tuple(audience),
        scope=tuple(scope),
        created_at=created,
        idle_ttl=idle,
        absolute_expires_at=absolute,
        revoked_at=revoked,
    )


def _refresh_params(record: RefreshRecord) -> tuple[Any, ...]:
    return (
        record.token_hash,
        record.session_id,
        _instant(record.issued_at),
        _instant(record.expires_at),
        _optional_instant(record.consumed_at),
        record.successor_hash,
        record.sealed_successor,
    )


def _refresh_from_row(row: Sequence[Any]) -> RefreshRecord:
    token_hash, session_id, issued, expires, consumed, successor, sealed = row
    return RefreshRecord(
        token_hash=bytes(token_hash),
        session_id=session_id,
        issued_at=issued,
        expires_at=expires,
        consumed_at=consumed,
        successor_hash=None if successor is None else bytes(successor),
        sealed_successor=None if sealed is None else bytes(sealed),
    )


def _revocation_from_row(row: Sequence[Any]) -> Revocation:
    kind, value, issued_before, expires_at = row
    return Revocation(
        RevocationKind(kind), value, _to_seconds(issued_before), _to_seconds(expires_at)
    )


async def _upsert_revocation(conn: Any, revocation: Revocation, recorded_at: datetime) -> None:
    """Record ``revocation``, widening (never narrowing) one already recorded."""
    await conn.execute(
        "INSERT INTO revocations (kind, value, issued_before, expires_at, recorded_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value) DO UPDATE SET"
        " issued_before = GREATEST(revocations.issued_before, EXCLUDED.issued_before),"
        " expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at),"
        " recorded_at = GREATEST(revocations.recorded_at, EXCLUDED.recorded_at)",
        revocation.kind.value,
        revocation.value,
        _from_seconds(revocation.issued_before),
        _from_seconds(revocation.expires_at),
        recorded_at,
    )


_INSERT_REFRESH = (
    f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"  # noqa: S608
)


# -- outbox and audit log ------------------------------------------------------------

_EVENT_COLUMNS = (
    "id, type, aggregate_type, aggregate_id, occurred_at, actor, source_address, request_id, data"
)
_AUDIT_COLUMNS = (
    "event_sequence, event_id, action, actor, target_type, target_id, source_address,"
    " request_id, result, occurred_at, data"
)
_EVENT_TAKEN = {"outbox.id": "an event with this id is already in the outbox"}


async def _insert_events(conn: Any, events: Sequence[Event]) -> None:
    """Inside the caller's transaction: the events commit or roll back with the change."""
    if not events:
        return
    await conn.executemany(
        f"INSERT INTO outbox ({_EVENT_COLUMNS})"  # noqa: S608
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        [
            (
                e.id,
                e.type,
                e.aggregate_type,
                e.aggregate_id,
                _instant(e.occurred_at),
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
        occurred_at=occurred,
        actor=actor,
        source_address=source,
        request_id=rid,
        data=json.loads(data),
    )
    return OutboxEntry(int(sequence), event)


def _audit_from_row(row: Sequence[Any]) -> AuditRecord:
    sequence, event_id, action, actor, target_type, target_id, source, rid, result, at, data = row
    return AuditRecord(
        event_sequence=int(sequence),
        event_id=event_id,
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        source_address=source,
        request_id=rid,
        result=result,
        occurred_at=at,
        data=json.loads(data),
    )


async def _select_keys(conn: Any) -> list[KeyRecord]:
    """In byte order of kid (as SQLite sorts), whatever the database's collation."""
    rows = await conn.fetch(
        f'SELECT {_KEY_COLUMNS} FROM signing_keys ORDER BY published_at, kid COLLATE "C"'  # noqa: S608
    )
    return [_key_from_row(row) for row in rows]


# -- migrations ------------------------------------------------------------------


class _PostgresMigrationTarget:
    """Runs each migration in its own transaction under an advisory lock, so processes
    opening the store at the same time apply each migration exactly once."""

    def __init__(self, conn: Any, schema: str, lock_key: int) -> None:
        self._conn = conn
        self._schema = schema
        self._lock_key = lock_key

    async def prepare(self) -> None:
        """Create the schema (only if missing: ``CREATE SCHEMA IF NOT EXISTS`` would need
        the CREATE privilege even when it exists) and the ledger."""
        schema = _quote_identifier(self._schema)
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            exists = await self._conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", self._schema
            )
            if not exists:
                await self._conn.execute(f"CREATE SCHEMA {schema}")
            await self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations"
                " (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )

    async def applied_versions(self) -> set[int]:
        rows = await self._conn.fetch("SELECT version FROM schema_migrations")
        return {int(row[0]) for row in rows}

    async def _backfill_principal_names(self) -> None:
        rows = await self._conn.fetch("SELECT id, name FROM principals ORDER BY created_at, id")
        keys = backfill_principal_names([(row[0], row[1]) for row in rows])
        await self._conn.executemany(
            "UPDATE principals SET canonical_name = $2, name_skeleton = $3 WHERE id = $1",
            [(k.principal_id, k.canonical_name, k.name_skeleton) for k in keys],
        )
        await self._conn.execute("ALTER TABLE principals ALTER COLUMN canonical_name SET NOT NULL")

    async def apply(self, migration: Migration) -> None:
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            if migration.version in await self.applied_versions():
                return  # another process applied it while we waited for the lock
            await self._conn.execute(migration.sql)  # no arguments: several statements may run
            if migration.version == PRINCIPAL_NAMES_VERSION:
                await self._backfill_principal_names()
            await self._conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )


# -- the store -------------------------------------------------------------------


class _PostgresKeyRingTransaction:
    """The key-ring operations, run inside the store's open, advisory-locked transaction."""

    def __init__(
        self,
        conn: Any,
        translated: Callable[[Mapping[str, str] | None], AbstractContextManager[None]],
    ) -> None:
        self._conn = conn
        self._translated = translated

    async def list_keys(self) -> list[KeyRecord]:
        with self._translated(None):
            return await _select_keys(self._conn)

    async def insert_key(self, key: KeyRecord) -> None:
        params = _key_params(key)
        taken = {"signing_keys.kid": f"a key with kid {key.kid!r} already exists"}
        with self._translated(taken):
            await self._conn.execute(
                f"INSERT INTO signing_keys ({_KEY_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *params,
            )

    async def update_key(self, update: KeyUpdate) -> None:
        """Reuse ``apply_update`` so the semantics cannot drift from the domain's."""
        with self._translated(None):
            row = await self._conn.fetchrow(
                f"SELECT {_KEY_COLUMNS} FROM signing_keys WHERE kid = $1",  # noqa: S608
                update.kid,
            )
        if row is None:
            raise NotFound(f"no key with kid {update.kid!r}")
        updated = apply_update(_key_from_row(tuple(row)), update)
        params = (
            update.kid,
            _instant(updated.activates_at),
            _optional_instant(updated.retires_at),
            _optional_instant(updated.compromised_at),
        )
        with self._translated(None):
            await self._conn.execute(
                "UPDATE signing_keys SET activates_at = $2, retires_at = $3,"
                " compromised_at = $4::timestamptz,"
                " wrapped_private_key = CASE WHEN $4::timestamptz IS NULL"
                " THEN wrapped_private_key END"
                " WHERE kid = $1",
                *params,
            )

    async def delete_keys(self, kids: tuple[str, ...]) -> None:
        with self._translated(None):
            await self._conn.execute(
                "DELETE FROM signing_keys WHERE kid = ANY($1::text[])", list(kids)
            )

    async def add_event(self, event: Event) -> None:
        with self._translated(_EVENT_TAKEN):
            await _insert_events(self._conn, (event,))

    async def rewrap_key(self, kid: str, wrapped_private_key: bytes, kek_id: str) -> None:
        """The ``compromised_at IS NULL`` guard keeps a compromised key without material."""
        with self._translated(None):
            exists = await self._conn.fetchval("SELECT 1 FROM signing_keys WHERE kid = $1", kid)
        if exists is None:
            raise NotFound(f"no key with kid {kid!r}")
        with self._translated(None):
            await self._conn.execute(
                "UPDATE signing_keys SET wrapped_private_key = $2, kek_id = $3"
                " WHERE kid = $1 AND compromised_at IS NULL",
                kid,
                bytes(wrapped_private_key),
                kek_id,
            )


class PostgresStore:
    """The ``Store`` on PostgreSQL (see the module docstring for the concurrency model)."""

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
        self._secrets = _dsn_secrets(dsn)
        self._migration_lock = _advisory_key("migrations", schema)
        self._key_ring_lock = _advisory_key("key_ring", schema)
        self._pool: Any = None
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
                        "search_path": _quote_identifier(self._schema),
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

    def _live_pool(self) -> Any:
        if self._closed:
            raise Unavailable("the store is closed")
        if self._pool is None:
            raise Unavailable("the store is not open")
        return self._pool

    @contextmanager
    def _translated(self, taken: Mapping[str, str] | None = None) -> Iterator[None]:
        """Turn driver errors into domain errors, in one place.

        ``taken`` maps a unique column (``"table.column"``, as SQLite's store names it) to
        the AlreadyExists message for it. Messages never include values (PostgreSQL puts
        the duplicate key in its detail) nor the DSN's password. Programming errors (bad
        SQL, bad parameters) are left alone: a bug is not an outage worth retrying.
        """
        try:
            yield
        except asyncpg.UniqueViolationError as exc:
            column = _UNIQUE_COLUMNS.get(exc.constraint_name or "", "")
            raise AlreadyExists((taken or {}).get(column, "the record already exists")) from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            violated = exc.constraint_name or f"SQLSTATE {exc.sqlstate}"
            raise AuthorityError(
                f"the PostgreSQL store rejected a record: it violates {violated}"
            ) from exc
        except asyncpg.DataError as exc:  # class 22: the server refused a value
            raise InvalidArgument(
                f"the PostgreSQL store rejected a value (SQLSTATE {exc.sqlstate})"
            ) from exc
        except asyncpg.TransactionRollbackError as exc:  # class 40: deadlock, serialization
            raise Conflict(
                "PostgreSQL aborted the transaction because of a concurrent one; retry"
            ) from exc
        except asyncpg.ClientConfigurationError as exc:
            raise InvalidArgument(
                f"the PostgreSQL connection settings are invalid: {self._redact(str(exc))}"
            ) from exc
        except _CLIENT_BUGS:
            raise
        except _UNAVAILABLE as exc:
            if self._closed:
                raise Unavailable("the store is closed") from exc
            raise Unavailable(f"PostgreSQL is unavailable: {self._describe(exc)}") from exc

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
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection. Only acquiring and releasing it are translated here: an
        exception from the body is the caller's and passes through untouched."""
        pool = self._live_pool()
        with self._translated():
            conn = await pool.acquire(timeout=self._acquire_timeout)
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

    @asynccontextmanager
    async def _session(self, taken: Mapping[str, str] | None = None) -> AsyncIterator[Any]:
        """A pooled connection, with driver errors of the body translated."""
        async with self._connection() as conn:
            with self._translated(taken):
                yield conn

    async def schema_version(self) -> int:
        async with self._session() as conn:
            version = await conn.fetchval("SELECT MAX(version) FROM schema_migrations")
        return int(version or 0)

    # -- keys -------------------------------------------------------------------------

    async def list_keys(self) -> list[KeyRecord]:
        async with self._session() as conn:
            return await _select_keys(conn)

    async def key_ring_generation(self) -> int:
        async with self._session() as conn:
            generation = await conn.fetchval("SELECT generation FROM key_ring_state")
        return int(generation)

    @asynccontextmanager
    async def key_ring_transaction(self) -> AsyncIterator[KeyRingTransaction]:
        """The advisory lock is held until commit or rollback, so replicas take turns;
        the generation bump commits with the changes."""
        async with self._connection() as conn:
            transaction = conn.transaction()
            try:
                with self._translated():
                    await transaction.start()
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", self._key_ring_lock)
                yield _PostgresKeyRingTransaction(conn, self._translated)
            except Unavailable:
                raise  # the connection is dropped, which rolls back
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                raise
            with self._translated():
                await conn.execute("UPDATE key_ring_state SET generation = generation + 1")
                await transaction.commit()

    # -- principals -------------------------------------------------------------------

    async def create_principal(self, principal: Principal, *, events: Sequence[Event] = ()) -> None:
        taken = {
            **taken_messages(principal.name),
            "principals.id": f"a principal with id {principal.id!r} already exists",
            **_EVENT_TAKEN,
        }
        params = (
            principal.id,
            principal.name,
            principal.password_hash,
            principal.disabled,
            _instant(principal.created_at),
            canonical_name(principal.name),
            name_skeleton(principal.name),
        )
        async with self._session(taken) as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO principals ({_PRINCIPAL_COLUMNS}, canonical_name, name_skeleton)"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                *params,
            )
            await _insert_events(conn, events)

    async def get_principal_by_name(self, name: str) -> Principal | None:
        return await self._get_principal("canonical_name", canonical_name(name))

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self._get_principal("id", principal_id)

    async def _get_principal(
        self, column: Literal["id", "canonical_name"], value: str
    ) -> Principal | None:
        """``column`` is one of two literals, never caller input."""
        async with self._session() as conn:
            row = await conn.fetchrow(
                f"SELECT {_PRINCIPAL_READ} FROM principals WHERE {column} = $1",  # noqa: S608
                value,
            )
        return None if row is None else _principal_from_row(tuple(row))

    async def update_principal(
        self,
        principal_id: str,
        *,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: Sequence[Event] = (),
    ) -> Principal | None:
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE principals SET password_hash = COALESCE($2, password_hash),"  # noqa: S608
                f" disabled = COALESCE($3, disabled),"
                f" credential_generation = credential_generation + $4"
                f" WHERE id = $1 RETURNING {_PRINCIPAL_READ}",
                principal_id,
                password_hash,
                disabled,
                int(password_hash is not None or disabled is not None),
            )
            if row is not None:
                await _insert_events(conn, events)
        return None if row is None else _principal_from_row(tuple(row))

    async def rehash_password(
        self, principal_id: str, *, generation: int, password_hash: str
    ) -> bool:
        async with self._session() as conn:
            status = await conn.execute(
                "UPDATE principals SET password_hash = $3"
                " WHERE id = $1 AND credential_generation = $2",
                principal_id,
                generation,
                password_hash,
            )
        return _count(status) > 0

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
        """The principal's row is updated first: its lock waits for every login holding
        ``FOR SHARE`` on it (``create_session``), so the sessions update below, a new
        statement under READ COMMITTED, sees every session those logins committed; a
        login arriving later waits for this transaction and then finds the new generation."""
        changed_at = _instant(at)
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE principals SET password_hash = COALESCE($2, password_hash),"  # noqa: S608
                f" disabled = COALESCE($3, disabled),"
                f" credential_generation = credential_generation + 1,"
                f" credentials_changed_at = GREATEST(credentials_changed_at, $4)"
                f" WHERE id = $1 RETURNING {_PRINCIPAL_READ}",
                principal_id,
                password_hash,
                disabled,
                changed_at,
            )
            principal = None if row is None else _principal_from_row(tuple(row))
            if delete and principal is not None:
                await conn.execute("DELETE FROM principals WHERE id = $1", principal_id)
            recorded: list[Revocation] = []
            if revocation is not None:
                await _upsert_revocation(conn, revocation, changed_at)
                recorded.append(revocation)
                ended = await conn.fetch(
                    "UPDATE sessions SET revoked_at = $1"
                    " WHERE subject = $2 AND revoked_at IS NULL RETURNING id",
                    changed_at,
                    principal_id,
                )
                for (session_id,) in ended:
                    session = session_revocation(session_id, revocation.expires_at)
                    await _upsert_revocation(conn, session, changed_at)
                    recorded.append(session)
            if principal is not None or revocation is not None:
                await _insert_events(conn, events)
        return CredentialChange(principal, tuple(recorded))

    async def delete_principal(self, principal_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            status = await conn.execute("DELETE FROM principals WHERE id = $1", principal_id)
            if _count(status) > 0:
                await _insert_events(conn, events)
        return _count(status) > 0

    # -- clients ----------------------------------------------------------------------

    async def create_client(self, client: Client, *, events: Sequence[Event] = ()) -> None:
        taken = {"clients.id": f"a client with id {client.id!r} already exists", **_EVENT_TAKEN}
        params = _client_params(client)
        async with self._session(taken) as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO clients ({_CLIENT_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                *params,
            )
            await _insert_events(conn, events)

    async def get_client(self, client_id: str) -> Client | None:
        async with self._session() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE id = $1",  # noqa: S608
                client_id,
            )
        return None if row is None else _client_from_row(tuple(row))

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
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE clients SET secret_hash = COALESCE($2, secret_hash),"  # noqa: S608
                " disabled = COALESCE($3, disabled),"
                " allowed_claims = COALESCE($4, allowed_claims),"
                " allowed_sensitive_claims = COALESCE($5, allowed_sensitive_claims)"
                f" WHERE id = $1 RETURNING {_CLIENT_COLUMNS}",
                client_id,
                None if secret_hash is None else bytes(secret_hash),
                disabled,
                None if allowed_claims is None else sorted(allowed_claims),
                None if sensitive_claims is None else sorted(sensitive_claims),
            )
            if row is not None:
                await _insert_events(conn, events)
        return None if row is None else _client_from_row(tuple(row))

    async def delete_client(self, client_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            status = await conn.execute("DELETE FROM clients WHERE id = $1", client_id)
            if _count(status) > 0:
                await _insert_events(conn, events)
        return _count(status) > 0

    # -- sessions ---------------------------------------------------------------------

    async def create_session(
        self,
        session: Session,
        first: RefreshRecord | None,
        *,
        events: Sequence[Event] = (),
        generation: int | None = None,
    ) -> bool:
        """``FOR SHARE`` on the principal's row: a credential change (which updates that
        row first) either waits for this insert to commit, and then revokes the session, or
        commits first, and then the re-checked row no longer matches. Logins of one
        principal share the lock and do not wait for each other."""
        taken = {"sessions.id": f"a session with id {session.id!r} already exists", **_EVENT_TAKEN}
        session_params = _session_params(session)
        refresh_params = None if first is None else _refresh_params(first)
        async with self._session(taken) as conn, conn.transaction():
            if generation is not None:
                current = await conn.fetchval(
                    "SELECT true FROM principals WHERE id = $1"
                    " AND credential_generation = $2 AND NOT disabled FOR SHARE",
                    session.subject,
                    generation,
                )
                if current is None:
                    return False  # nothing written; committing nothing is a rollback
            await conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *session_params,
            )
            if refresh_params is not None:
                await conn.execute(_INSERT_REFRESH, *refresh_params)
            await _insert_events(conn, events)
        return True

    async def find_refresh(
        self, token_hash: bytes
    ) -> tuple[RefreshRecord, Session, RefreshRecord | None] | None:
        """One statement, so the three records come from one snapshot."""
        async with self._session() as conn:
            row = await conn.fetchrow(
                f"SELECT {_prefixed('r', _REFRESH_COLUMNS)}, {_prefixed('s', _SESSION_COLUMNS)},"  # noqa: S608
                f" {_prefixed('n', _REFRESH_COLUMNS)}"
                " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
                " LEFT JOIN refresh_tokens n ON n.token_hash = r.successor_hash"
                " WHERE r.token_hash = $1",
                token_hash,
            )
        if row is None:
            return None
        values = tuple(row)
        record = _refresh_from_row(values[:7])
        session = _session_from_row(values[7:16])
        successor = None if values[16] is None else _refresh_from_row(values[16:])
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
        """One conditional UPDATE decides the race: a concurrent consumer blocks on the row
        lock, then re-checks ``consumed_at IS NULL`` against the winner's committed row and
        updates nothing. ``FOR SHARE`` makes a concurrent revocation of the session either
        wait for this consumption or be seen by it."""
        consumed = _instant(consumed_at)
        successor_params = _refresh_params(successor)
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            won = await conn.fetchval(
                "UPDATE refresh_tokens SET consumed_at = $2, successor_hash = $3,"
                " sealed_successor = $4"
                " WHERE token_hash = $1 AND consumed_at IS NULL AND EXISTS"
                " (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id"
                " AND s.revoked_at IS NULL FOR SHARE)"
                " RETURNING true",
                token_hash,
                consumed,
                successor.token_hash,
                sealed,
            )
            if won is None:
                return False  # nothing was changed; committing nothing is a rollback
            await conn.execute(_INSERT_REFRESH, *successor_params)
            await _insert_events(conn, events)
        return True

    # -- revocations ------------------------------------------------------------------

    async def record_revocation(
        self, revocation: Revocation, *, at: datetime, events: Sequence[Event] = ()
    ) -> int | None:
        column = _SESSION_COLUMN_BY_KIND.get(revocation.kind)
        recorded_at = _instant(at)
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            # The conditional insert decides: a repeat changes no row, and then nothing
            # else is written either (race-safe: a concurrent twin waits on the row's
            # unique index, then sees it and inserts nothing).
            changed = await conn.fetchval(
                _RECORD_FINAL_REVOCATION if revocation.kind in FINAL_KINDS else _RECORD_REVOCATION,
                revocation.kind.value,
                revocation.value,
                _from_seconds(revocation.issued_before),
                _from_seconds(revocation.expires_at),
                recorded_at,
            )
            if changed is None:
                return None  # nothing was changed; committing nothing is a rollback
            await _insert_events(conn, events)
            if column is None:
                return 0
            status = await conn.execute(
                f"UPDATE sessions SET revoked_at = $1"  # noqa: S608 - column from a fixed map
                f" WHERE {column} = $2 AND revoked_at IS NULL",
                recorded_at,
                revocation.value,
            )
        return _count(status)

    async def list_revocations(self, now: float) -> list[Revocation]:
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT kind, value, issued_before, expires_at FROM revocations"
                " WHERE expires_at > $1",
                _from_seconds(now),
            )
        return [_revocation_from_row(tuple(row)) for row in rows]

    async def revocations_since(self, since: datetime, now: float) -> list[Revocation]:
        since = _instant(since)
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT kind, value, issued_before, expires_at FROM revocations"
                " WHERE recorded_at >= $1 AND expires_at > $2",
                since,
                _from_seconds(now),
            )
        return [_revocation_from_row(tuple(row)) for row in rows]

    async def record_lockout(self, key: str, locked_until: float) -> None:
        async with self._session() as conn:
            await conn.execute(
                "INSERT INTO attempt_lockouts (key, locked_until) VALUES ($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET locked_until ="
                " greatest(attempt_lockouts.locked_until, excluded.locked_until)",
                key,
                _from_seconds(locked_until),
            )

    async def lockout_until(self, key: str, now: float) -> float | None:
        async with self._session() as conn:
            until = await conn.fetchval(
                "SELECT locked_until FROM attempt_lockouts WHERE key = $1 AND locked_until > $2",
                key,
                _from_seconds(now),
            )
        return None if until is None else _to_seconds(until)

    async def prune(self, now: datetime, *, sealed_before: datetime) -> int:
        now, sealed_before = _instant(now), _instant(sealed_before)
        async with self._session() as conn, conn.transaction():
            revocations = await conn.execute("DELETE FROM revocations WHERE expires_at <= $1", now)
            sessions = await conn.execute(
                "DELETE FROM sessions WHERE absolute_expires_at <= $1", now
            )
            await conn.execute(
                "UPDATE refresh_tokens SET sealed_successor = NULL"
                " WHERE consumed_at < $1 AND sealed_successor IS NOT NULL",
                sealed_before,
            )
            await conn.execute("DELETE FROM attempt_lockouts WHERE locked_until <= $1", now)
        return _count(revocations) + _count(sessions)

    # -- outbox -----------------------------------------------------------------------

    async def append_events(self, events: Sequence[Event]) -> None:
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            await _insert_events(conn, events)

    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """``FOR UPDATE SKIP LOCKED``: relays claiming at the same moment take disjoint
        batches instead of waiting for each other; the lease keeps the batch theirs after
        commit, until they mark it published or the lease lapses."""
        now = _instant(now)
        async with self._session() as conn, conn.transaction():
            rows = await conn.fetch(
                f"UPDATE outbox SET claimed_until = $3 WHERE sequence IN"  # noqa: S608
                " (SELECT sequence FROM outbox WHERE published_at IS NULL"
                " AND (claimed_until IS NULL OR claimed_until <= $1)"
                " ORDER BY sequence LIMIT $2 FOR UPDATE SKIP LOCKED)"
                f" RETURNING sequence, {_EVENT_COLUMNS}",
                now,
                limit,
                now + lease,
            )
        return sorted((_entry_from_row(tuple(row)) for row in rows), key=lambda e: e.sequence)

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        at = _instant(at)
        async with self._session() as conn:
            await conn.execute(
                "UPDATE outbox SET published_at = $2, claimed_until = NULL"
                " WHERE id = ANY($1::text[]) AND published_at IS NULL",
                list(ids),
                at,
            )

    async def read_outbox(self, *, after: int = 0, limit: int = 1000) -> list[OutboxEntry]:
        async with self._session() as conn:
            rows = await conn.fetch(
                f"SELECT sequence, {_EVENT_COLUMNS} FROM outbox"  # noqa: S608
                " WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                after,
                limit,
            )
        return [_entry_from_row(tuple(row)) for row in rows]

    async def outbox_depth(self) -> int:
        async with self._session() as conn:
            depth = await conn.fetchval("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        return int(depth)

    async def outbox_published(self, ids: Sequence[str]) -> set[str]:
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT id FROM outbox WHERE id = ANY($1::text[]) AND published_at IS NOT NULL",
                list(ids),
            )
        return {row[0] for row in rows}

    async def prune_outbox(self, published_before: datetime) -> int:
        async with self._session() as conn:
            status = await conn.execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
                _instant(published_before),
            )
        return _count(status)

    # -- audit log --------------------------------------------------------------------

    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        added = 0
        async with self._session() as conn, conn.transaction():
            for r in records:
                status = await conn.execute(
                    f"INSERT INTO audit_log ({_AUDIT_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)"
                    " ON CONFLICT DO NOTHING",
                    r.event_sequence,
                    r.event_id,
                    r.action,
                    r.actor,
                    r.target_type,
                    r.target_id,
                    r.source_address,
                    r.request_id,
                    r.result,
                    _instant(r.occurred_at),
                    json.dumps(dict(r.data), sort_keys=True, separators=(",", ":")),
                )
                added += _count(status)
        return added

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Conditions are fixed strings; only the values are parameters."""
        conditions, params = ["event_sequence > $1"], list[object]([query.after_sequence])
        for condition, value in (
            ("target_id = ${}", query.target_id or None),
            ("action = ${}", query.action or None),
            ("occurred_at >= ${}", None if query.since is None else _instant(query.since)),
            ("occurred_at < ${}", None if query.until is None else _instant(query.until)),
        ):
            if value is not None:
                params.append(value)
                conditions.append(condition.format(len(params)))
        params.append(query.limit)
        async with self._session() as conn:
            rows = await conn.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(conditions)}"  # noqa: S608
                f" ORDER BY event_sequence LIMIT ${len(params)}",
                *params,
            )
        return [_audit_from_row(tuple(row)) for row in rows]

    # -- webhooks ---------------------------------------------------------------------

    async def create_webhook(self, webhook: Webhook, *, events: Sequence[Event] = ()) -> None:
        taken = {"webhooks.id": f"a webhook with id {webhook.id!r} already exists", **_EVENT_TAKEN}
        async with self._session(taken) as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO webhooks (id, url, event_types, wrapped_secret, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                webhook.id,
                webhook.url,
                list(webhook.event_types),
                bytes(webhook.wrapped_secret),
                _instant(webhook.created_at),
            )
            await _insert_events(conn, events)

    async def rewrap_webhook_secret(self, webhook_id: str, wrapped_secret: bytes) -> None:
        async with self._session() as conn:
            await conn.execute(
                "UPDATE webhooks SET wrapped_secret = $1 WHERE id = $2", wrapped_secret, webhook_id
            )

    async def list_webhooks(self) -> list[Webhook]:
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT id, url, event_types, wrapped_secret, created_at FROM webhooks"
                ' ORDER BY created_at, id COLLATE "C"'
            )
        return [Webhook(row[0], row[1], tuple(row[2]), bytes(row[3]), row[4]) for row in rows]

    async def delete_webhook(self, webhook_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._session(_EVENT_TAKEN) as conn, conn.transaction():
            status = await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
            if _count(status) > 0:
                await _insert_events(conn, events)
        return _count(status) > 0

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        async with self._session() as conn:
            await conn.execute(
                "INSERT INTO webhook_dead_letters"
                " (id, webhook_id, event_id, payload, attempts, last_error, failed_at)"
                " SELECT $1, $2, $3, $4, $5, $6, $7"
                " WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $2)",
                letter.id,
                letter.webhook_id,
                letter.event_id,
                bytes(letter.payload),
                letter.attempts,
                letter.last_error,
                _instant(letter.failed_at),
            )

    async def list_dead_letters(
        self, *, webhook_id: str = "", limit: int = 100
    ) -> list[DeadLetter]:
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT id, webhook_id, event_id, payload, attempts, last_error, failed_at"
                " FROM webhook_dead_letters WHERE ($1 = '' OR webhook_id = $1)"
                ' ORDER BY failed_at, id COLLATE "C" LIMIT $2',
                webhook_id,
                limit,
            )
        return [_dead_letter_from_row(tuple(row)) for row in rows]

    async def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        async with self._session() as conn:
            row = await conn.fetchrow(
                "DELETE FROM webhook_dead_letters WHERE id = $1"
                " RETURNING id, webhook_id, event_id, payload, attempts, last_error, failed_at",
                letter_id,
            )
        return None if row is None else _dead_letter_from_row(tuple(row))


def _dead_letter_from_row(row: Sequence[Any]) -> DeadLetter:
    letter_id, webhook_id, event_id, payload, attempts, last_error, failed_at = row
    return DeadLetter(
        letter_id, webhook_id, event_id, bytes(payload), attempts, last_error, failed_at
    )


if TYPE_CHECKING:
    _checked: Store = PostgresStore("")  # mypy proves PostgresStore satisfies the protocol
