"""What the shared store code needs from a backend: connections that run ``?``-marked
statements, one write-transaction helper, a codec and the few words of SQL that differ.

Every write goes through ``Database.write``: one transaction, committed when the block
ends and rolled back when it raises, so a change and its outbox events commit together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from authority.store.codec import Codec

Row = Sequence[Any]


class Connection(Protocol):
    """One connection, inside a read or a write. Statements mark parameters with ``?``."""

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; how many rows it changed."""
        ...

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None: ...

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL that differs between the backends (everything else is shared)."""

    greatest: str  # the two-argument maximum: MAX (SQLite) or GREATEST
    byte_order: str  # after a text ORDER BY key: sort by bytes whatever the collation
    share_lock: str  # after a SELECT that must hold a shared row lock until commit
    skip_locked: str  # after a SELECT that claims rows other transactions have not


class Database(Protocol):
    """A backend's connections. Driver errors leave it as domain errors only."""

    codec: Codec
    dialect: Dialect

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def read(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads (each statement sees committed data)."""
        ...

    def write(
        self, taken: Mapping[str, str] | None = None, *, key_ring: bool = False
    ) -> AbstractAsyncContextManager[Connection]:
        """One write transaction. ``taken`` maps a unique ``table.column`` to its
        AlreadyExists message; ``key_ring`` also takes the key-ring lock, which orders
        key-ring transactions across every process sharing the store."""
        ...

    def translated(self, taken: Mapping[str, str] | None = None) -> AbstractContextManager[None]:
        """Driver errors of the block as domain errors (for messages of one statement)."""
        ...
