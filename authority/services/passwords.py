"""argon2id password hashing, off the event loop in a bounded pool.

argon2-cffi releases the GIL while hashing, so a small thread pool lets logins
use other cores without starving Verify on the event loop; the pool's size
bounds the memory a login flood can claim (workers x memory cost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authority.domain.errors import ResourceExhausted

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HashParameters:
    time_cost: int
    memory_kib: int
    parallelism: int


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


class PasswordHasher:
    """``max_pending`` bounds the queue in front of the pool too: past it, a login is
    refused at once (RESOURCE_EXHAUSTED) instead of holding memory and a request slot
    while hundreds of others hash."""

    def __init__(
        self, parameters: HashParameters, *, workers: int, max_pending: int | None = None
    ) -> None:
        self._hasher = Argon2Hasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._max_pending = max_pending if max_pending is not None else workers * 32
        self._pending = 0
        # Verifying against this when the principal does not exist makes unknown
        # names cost the same as known ones.
        self._dummy_hash = self._hasher.hash("authority-dummy-password")

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._pending >= self._max_pending:
            raise ResourceExhausted("too many logins in progress; retry in a moment")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    def _check(self, encoded: str | None, password: str) -> PasswordCheck:
        try:
            self._hasher.verify(encoded or self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return PasswordCheck(ok=False)
        if encoded is None:
            return PasswordCheck(ok=False)
        return PasswordCheck(ok=True, needs_rehash=self._hasher.check_needs_rehash(encoded))

    async def verify(self, encoded: str | None, password: str) -> PasswordCheck:
        """Check ``password``; with ``encoded`` None, spend the same time and fail."""
        return await self._run(self._check, encoded, password)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
