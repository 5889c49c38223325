"""Creating and looking up principals."""

from __future__ import annotations

import secrets

from authority.domain.clock import Clock
from authority.domain.errors import NotFound
from authority.domain.principals import Principal, validate_name, validate_password
from authority.services.passwords import PasswordHasher
from authority.store.base import Store


def new_principal_id() -> str:
    return "p_" + secrets.token_hex(12)


class PrincipalService:
    def __init__(self, *, store: Store, hasher: PasswordHasher, clock: Clock) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock

    async def create(self, name: str, password: str) -> Principal:
        normalized = validate_name(name)
        validate_password(password)
        principal = Principal(
            id=new_principal_id(),
            name=normalized,
            password_hash=await self._hasher.hash(password),
            disabled=False,
            created_at=self._clock.now(),
        )
        await self._store.create_principal(principal)
        return principal

    async def get(self, name: str) -> Principal:
        principal = await self._store.get_principal_by_name(validate_name(name))
        if principal is None:
            raise NotFound(f"no principal named {name!r}")
        return principal
