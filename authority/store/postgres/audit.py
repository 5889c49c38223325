"""The audit append on PostgreSQL in one statement: the relay appends a batch of events'
records at a time, and one INSERT from arrays costs one round trip where one INSERT per
record cost one each. ``ON CONFLICT DO NOTHING`` keeps a redelivered event's record from
being added twice (within the batch too), and the command tag counts the new ones. One
statement is its own transaction, so it needs no BEGIN and COMMIT round trips."""

from __future__ import annotations

from collections.abc import Sequence

from authority.domain.audit import AuditRecord
from authority.store import rows
from authority.store.facets.outbox import Audit

_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",  # data: JSON text, cast to jsonb below
)
_NAMES = [column.strip() for column in rows.AUDIT_COLUMNS.split(",")]
assert len(_NAMES) == len(_TYPES), "one array type per audit column"
_ARRAYS = ", ".join(f"?::{kind}[]" for kind in _TYPES)
_VALUES = ", ".join(f"{name}::jsonb" if name == "data" else name for name in _NAMES)
INSERT_AUDIT_BATCH = (
    f"INSERT INTO audit_log ({rows.AUDIT_COLUMNS})"  # noqa: S608 - fixed names only
    f" SELECT {_VALUES} FROM unnest({_ARRAYS}) AS batch({rows.AUDIT_COLUMNS})"
    " ON CONFLICT DO NOTHING"
)


class PostgresAudit(Audit):
    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        if not records:
            return 0
        params = [rows.audit_params(self._codec, record) for record in records]
        columns = [list(column) for column in zip(*params, strict=True)]
        async with self._db.read() as conn:  # one statement: atomic on its own
            return await conn.execute(INSERT_AUDIT_BATCH, *columns)
