"""Choosing the store from configuration: PostgreSQL for a database URL, else SQLite."""

from __future__ import annotations

import re
from pathlib import Path

from authority.domain.errors import InvalidArgument
from authority.store.base import Store
from authority.store.sqlite import SqliteStore

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")


def make_store(database_url: str | None, sqlite_path: Path) -> Store:
    """``PostgresStore`` for a ``postgresql://`` (or ``postgres://``) URL, ``SqliteStore``
    on ``sqlite_path`` when there is no URL. Does no I/O.

    Anything else is InvalidArgument naming the scheme, never the rest of the URL (it
    may hold a password).
    """
    if not database_url or not database_url.strip():
        return SqliteStore(sqlite_path)
    scheme, separator, _ = database_url.strip().partition("://")
    if not separator or not _SCHEME.match(scheme):
        raise InvalidArgument(
            "the database URL must start with postgresql:// (leave it empty for SQLite)"
        )
    if scheme.lower() in _POSTGRES_SCHEMES:
        # Imported here so an embedded (SQLite) deployment never loads asyncpg.
        from authority.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(database_url.strip())
    raise InvalidArgument(
        f"unsupported database URL scheme {scheme!r}: use postgresql:// (or leave it empty "
        "for SQLite)"
    )
