"""Versioned schema migrations, shared by every SQL backend.

Each backend keeps its own directory of ``NNNN_description.sql`` files and a
``schema_migrations`` ledger. What to apply is decided by a pure function
(``plan_migrations``); how a migration runs in one transaction is the backend's
business (a ``MigrationTarget``), so PostgreSQL can reuse everything here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Protocol

from authority.domain.errors import Unavailable

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its version (from the file name), a description and its SQL."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Traversable) -> tuple[Migration, ...]:
    """Read every ``.sql`` file of ``directory``, in version order.

    A malformed name, a duplicate or a gap is a packaging bug, so it raises
    ValueError instead of silently skipping a schema change.
    """
    migrations: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_description.sql")
        version = int(match["version"])
        migrations.append(Migration(version, match["name"], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must run 1, 2, 3, ... without gaps; found {versions}")
    return tuple(migrations)


def plan_migrations(
    applied: Iterable[int], available: Sequence[Migration]
) -> tuple[Migration, ...]:
    """The migrations still to apply, in order.

    Raises Unavailable if the database was migrated by a newer build: running old
    code against a newer schema could corrupt data, so it must not start.
    """
    applied = set(applied)
    latest_known = max((m.version for m in available), default=0)
    newest_applied = max(applied, default=0)
    if newest_applied > latest_known:
        raise Unavailable(
            f"the database schema is at version {newest_applied}, but this build only knows "
            f"versions up to {latest_known}; run a newer authority against this database"
        )
    return tuple(m for m in sorted(available, key=lambda m: m.version) if m.version not in applied)


class MigrationTarget(Protocol):
    """A backend's way to run migrations against its database."""

    async def prepare(self) -> None:
        """Create the ``schema_migrations`` ledger if it does not exist."""
        ...

    async def applied_versions(self) -> set[int]:
        """The versions recorded in the ledger."""
        ...

    async def apply(self, migration: Migration) -> None:
        """Run the migration and record it, in one transaction.

        Must do nothing if another process recorded the same version meanwhile.
        """
        ...


async def migrate(target: MigrationTarget, available: Sequence[Migration]) -> None:
    """Bring the database up to date, one transaction per migration."""
    await target.prepare()
    for migration in plan_migrations(await target.applied_versions(), available):
        await target.apply(migration)
