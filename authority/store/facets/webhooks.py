"""Webhook subscriptions and their dead letters."""

from __future__ import annotations

from collections.abc import Sequence

from authority.domain.events import Event
from authority.domain.webhooks import DeadLetter, Webhook
from authority.store import rows
from authority.store.facets.common import EVENT_TAKEN, Facet

_INSERT = rows.insert("webhooks", rows.WEBHOOK_COLUMNS)
_INSERT_LETTER = (
    f"INSERT INTO webhook_dead_letters ({rows.DEAD_LETTER_COLUMNS})"  # noqa: S608
    f" SELECT {rows.marks(rows.DEAD_LETTER_COLUMNS)}"
    " WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)"
)


class Webhooks(Facet):
    async def create_webhook(self, webhook: Webhook, *, events: Sequence[Event] = ()) -> None:
        taken = {"webhooks.id": f"a webhook with id {webhook.id!r} already exists", **EVENT_TAKEN}
        async with self._db.write(taken) as conn:
            await conn.execute(_INSERT, *rows.webhook_params(self._codec, webhook))
            await self._insert_events(conn, events)

    async def rewrap_webhook_secret(self, webhook_id: str, wrapped_secret: bytes) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "UPDATE webhooks SET wrapped_secret = ? WHERE id = ?",
                bytes(wrapped_secret),
                webhook_id,
            )

    async def list_webhooks(self) -> list[Webhook]:
        async with self._db.read() as conn:
            found = await conn.fetch(
                f"SELECT {rows.WEBHOOK_COLUMNS} FROM webhooks"  # noqa: S608
                f" ORDER BY created_at, id{self._db.dialect.byte_order}"
            )
        return [rows.webhook_from_row(self._codec, row) for row in found]

    async def delete_webhook(self, webhook_id: str, *, events: Sequence[Event] = ()) -> bool:
        async with self._db.write(EVENT_TAKEN) as conn:
            deleted = await conn.execute("DELETE FROM webhooks WHERE id = ?", webhook_id)
            if deleted:
                await self._insert_events(conn, events)
        return deleted > 0

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                _INSERT_LETTER, *rows.dead_letter_params(self._codec, letter), letter.webhook_id
            )

    async def list_dead_letters(
        self, *, webhook_id: str = "", limit: int = 100
    ) -> list[DeadLetter]:
        async with self._db.read() as conn:
            found = await conn.fetch(
                f"SELECT {rows.DEAD_LETTER_COLUMNS} FROM webhook_dead_letters"  # noqa: S608
                " WHERE (? = '' OR webhook_id = ?)"
                f" ORDER BY failed_at, id{self._db.dialect.byte_order} LIMIT ?",
                webhook_id,
                webhook_id,
                limit,
            )
        return [rows.dead_letter_from_row(self._codec, row) for row in found]

    async def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        async with self._db.write() as conn:
            row = await conn.fetchrow(
                "DELETE FROM webhook_dead_letters WHERE id = ?"  # noqa: S608
                f" RETURNING {rows.DEAD_LETTER_COLUMNS}",
                letter_id,
            )
        return None if row is None else rows.dead_letter_from_row(self._codec, row)
