"""A store whose every operation is a child span of the request that called it, named
after the facet method (``store.get_principal``). The one choke point for database
spans, the same for SQLite and PostgreSQL; no statement text or argument is recorded.

Installed only when tracing is on; outside a recording span (background loops) it adds
no span, so loops never start traces of their own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

from authority.store.base import KeyRingTransaction, Store

if TYPE_CHECKING:
    from authority.observability.otel import Tracing


class _TracedStore:
    def __init__(self, store: Store, tracing: Tracing, system: str) -> None:
        self._store = store
        self._tracing = tracing
        self._system = system

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name == "key_ring_transaction":
            return self._key_ring_transaction
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._traced(name, attribute)

    def _attributes(self, name: str) -> dict[str, str]:
        return {"db.system.name": self._system, "db.operation.name": name}

    def _traced(
        self, name: str, operation: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        child, attributes = self._tracing.child, self._attributes(name)

        @functools.wraps(operation)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            return await child(f"store.{name}", attributes, lambda: operation(*args, **kwargs))

        return traced

    @asynccontextmanager
    async def _key_ring_transaction(self) -> AsyncIterator[KeyRingTransaction]:
        with self._tracing.span("store.key_ring_transaction", self._attributes("key_ring")):
            async with self._store.key_ring_transaction() as tx:
                yield tx


def traced(store: Store, tracing: Tracing, *, system: str) -> Store:
    """``store``, each operation a child span (``system``: "sqlite" or "postgresql")."""
    return cast(Store, _TracedStore(store, tracing, system))
