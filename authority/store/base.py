"""The storage interface every backend implements, and that one contract suite tests.

Backends translate their driver errors once, into the domain errors of
``authority.domain.errors`` (AlreadyExists, Unavailable, ...), so callers never
see a driver exception.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from authority.domain.keys import KeyRecord, KeyUpdate
from authority.domain.principals import Principal


class KeyRingTransaction(Protocol):
    """Changes to the key ring made under an exclusive lock, committed together.

    Only one transaction per key ring runs at a time across every process that
    shares the store, so two replicas racing to rotate see each other's keys and
    never both create one.
    """

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, including compromised ones not yet pruned, in no particular order."""
        ...

    async def insert_key(self, key: KeyRecord) -> None:
        """Add a key. AlreadyExists if its kid is taken."""
        ...

    async def update_key(self, update: KeyUpdate) -> None:
        """Apply new schedule times (see ``apply_update``). NotFound if the key does not exist.

        Compromising a key also erases its private material.
        """
        ...

    async def delete_keys(self, kids: tuple[str, ...]) -> None:
        """Remove keys for good. Unknown kids are ignored."""
        ...


class Store(Protocol):
    """Durable state.

    Constructors do no I/O; ``open`` connects and migrates, ``close`` is idempotent.
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections. Safe to call twice; use after close raises Unavailable."""
        ...

    async def schema_version(self) -> int:
        """The number of the last applied migration."""
        ...

    # -- keys -------------------------------------------------------------

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, without taking the key-ring lock (for loading and polling)."""
        ...

    async def key_ring_generation(self) -> int:
        """A number that grows with every committed key-ring transaction (cheap to poll)."""
        ...

    def key_ring_transaction(self) -> AbstractAsyncContextManager[KeyRingTransaction]:
        """An exclusive, atomic transaction over the key ring. Rolled back on exception."""
        ...

    # -- principals ---------------------------------------------------------

    async def create_principal(self, principal: Principal) -> None:
        """Store a new principal. AlreadyExists if the id or the name is taken."""
        ...

    async def get_principal_by_name(self, name: str) -> Principal | None:
        """The principal with this exact (NFC-normalised) name, or None."""
        ...

    async def get_principal(self, principal_id: str) -> Principal | None:
        """The principal with this id, or None."""
        ...
