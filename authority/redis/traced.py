"""A Redis client whose every command (and every pipeline, as one) is a child span of the
request that sent it: the one choke point for Redis spans, since every client comes from
``authority.redis.make_client``. Only the command's name is recorded, never its keys or
arguments (they hold principal names and source addresses).

Used only when tracing is on; outside a recording span (the fan-out's listener, the
event relay) it adds no span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

if TYPE_CHECKING:
    from authority.observability.otel import Tracing


def _attributes(operation: str, **more: int) -> dict[str, str | int]:
    return {"db.system.name": "redis", "db.operation.name": operation, **more}


class TracedPipeline(Pipeline):
    tracing: Tracing

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        operation = "MULTI" if self.is_transaction else "PIPELINE"
        attributes = _attributes(operation)
        attributes["db.operation.batch.size"] = len(self.command_stack)
        with self.tracing.span(f"redis.{operation}", attributes):
            return await super().execute(raise_on_error)


class TracedRedis(Redis):
    tracing: Tracing

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        operation = name.split(" ", 1)[0].upper()
        with self.tracing.span(f"redis.{operation}", _attributes(operation)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = TracedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.tracing = self.tracing
        return pipe
