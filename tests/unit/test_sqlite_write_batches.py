"""SQLite's shared write transactions keep each write's own outcome.

Concurrent one-trip writes share one transaction (one hop, one commit): each caller is
answered only after the commit, a write that raises is rolled back alone (its
neighbours commit), its driver error is named by its own ``taken``, a transaction that
SQLite rolled back whole fails every write of it (none committed), and a caller that
gave up before its batch started is left out.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from authority.domain.errors import AlreadyExists, Unavailable
from authority.store import sqlite as sqlite_module
from authority.store.sqlite import SqliteDatabase
from authority.store.sqlite_batch import Outcome, Write, run_batch


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "state" / "a.db")
    await database.open()
    await database.in_thread(
        lambda conn: conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"), begin=False
    )
    yield database
    await database.close()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch run in the store's thread."""
    sizes: list[int] = []
    real = run_batch

    def counted(conn: sqlite3.Connection, writes: Sequence[Write[Any]], translate: Any) -> Any:
        sizes.append(len(writes))
        outcomes: list[Outcome] = real(conn, writes, translate)
        return outcomes

    monkeypatch.setattr(sqlite_module, "run_batch", counted)
    return sizes


def _insert(key: str, *, fail: bool = False) -> Any:
    def work(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (?)", (key,))
        if fail:
            raise ValueError(f"{key} failed after writing")
        return key

    return work


async def _keys(db: SqliteDatabase) -> list[str]:
    def read(conn: sqlite3.Connection) -> list[str]:
        return [row[0] for row in conn.execute("SELECT k FROM t ORDER BY k")]

    return await db.in_thread(read, begin=False)


async def test_concurrent_writes_share_a_transaction_and_fail_alone(
    db: SqliteDatabase, batches: list[int]
) -> None:
    results = await asyncio.gather(
        db.in_thread(_insert("a")),
        db.in_thread(_insert("b", fail=True)),
        db.in_thread(_insert("c")),
        db.in_thread(_insert("a"), {"t.k": "key a is taken"}),
        db.in_thread(_insert("d")),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "c" and results[4] == "d"
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], AlreadyExists) and str(results[3]) == "key a is taken"
    assert await _keys(db) == ["a", "c", "d"]  # b's insert rolled back with it
    assert batches == [5]  # one hop, one commit


async def test_a_transaction_rolled_back_whole_fails_every_write_of_it(
    db: SqliteDatabase, batches: list[int]
) -> None:
    def lose_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('x')")
        conn.execute("ROLLBACK")  # as SQLite does itself on an I/O error or a full disk
        raise sqlite3.OperationalError("disk I/O error")

    results = await asyncio.gather(
        db.in_thread(_insert("a")),
        db.in_thread(lose_the_transaction),
        db.in_thread(_insert("c")),
        return_exceptions=True,
    )
    assert all(isinstance(r, Unavailable) for r in results), results
    assert await _keys(db) == []  # nobody was told "committed" for a write that was lost
    assert await db.in_thread(_insert("e")) == "e"  # the store goes on
    assert batches == [3, 1]


async def test_a_caller_that_gave_up_before_its_batch_is_left_out(
    db: SqliteDatabase, batches: list[int]
) -> None:
    first = asyncio.create_task(db.in_thread(_insert("a")))
    await asyncio.sleep(0)  # the first batch is under way
    late = asyncio.create_task(db.in_thread(_insert("b")))
    other = asyncio.create_task(db.in_thread(_insert("c")))
    await asyncio.sleep(0)
    late.cancel()
    assert await first == "a" and await other == "c"
    with pytest.raises(asyncio.CancelledError):
        await late
    assert await _keys(db) == ["a", "c"]
    assert batches == [1, 1]


async def test_a_closed_store_answers_unavailable(db: SqliteDatabase) -> None:
    await db.close()
    with pytest.raises(Unavailable):
        await db.in_thread(_insert("a"))
