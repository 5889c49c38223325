"""Principals: create, look up, disable, change password, delete.

Disabling, deleting or (on request) changing the password revokes every session
and access token of the principal at once: those are security actions.
"""

from __future__ import annotations

import secrets

from authority.domain.clients import PRINCIPAL_ID_PREFIX
from authority.domain.clock import Clock
from authority.domain.errors import AlreadyExists, NotFound
from authority.domain.events import PRINCIPAL, Event, new_event
from authority.domain.password_policy import PasswordPolicy
from authority.domain.principals import Principal, principal_key, validate_new_name
from authority.domain.revocation import RevocationKind
from authority.services.passwords import PasswordHasher
from authority.services.revocations import RevocationService
from authority.store.base import Store


def new_principal_id() -> str:
    return PRINCIPAL_ID_PREFIX + secrets.token_hex(12)


class PrincipalService:
    def __init__(
        self,
        *,
        store: Store,
        hasher: PasswordHasher,
        clock: Clock,
        policy: PasswordPolicy,
        revocations: RevocationService,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock
        self._policy = policy
        self._revocations = revocations

    async def create(self, name: str, password: str) -> Principal:
        normalized = validate_new_name(name)
        password = self._policy.check(password, context=(normalized,))
        if await self._store.get_principal_by_name(normalized) is not None:
            # Before hashing; the store's unique indexes still decide races.
            raise AlreadyExists(f"a principal named {normalized!r} already exists")
        principal = Principal(
            id=new_principal_id(),
            name=normalized,
            password_hash=await self._hasher.hash(password),
            disabled=False,
            created_at=self._clock.now(),
        )
        event = self._event("principal.created", principal, name=principal.name)
        await self._store.create_principal(principal, events=(event,))
        return principal

    def _event(self, type_: str, principal: Principal, **data: object) -> Event:
        """Names and ids only: never the password nor its hash."""
        return new_event(type_, PRINCIPAL, principal.id, at=self._clock.now(), data=data)

    async def get(self, name: str) -> Principal:
        principal = await self._store.get_principal_by_name(principal_key(name))
        if principal is None:
            raise NotFound(f"no principal named {name!r}")
        return principal

    async def set_disabled(self, name: str, disabled: bool) -> Principal:
        principal = await self.get(name)
        if disabled:
            await self._revocations.revoke(RevocationKind.SUBJECT, principal.id)
        action = "principal.disabled" if disabled else "principal.enabled"
        event = self._event(action, principal, name=principal.name)
        return await self._updated(principal.id, disabled=disabled, events=(event,))

    async def set_password(self, name: str, password: str, *, revoke_sessions: bool) -> Principal:
        principal = await self.get(name)
        password = self._policy.check(password, context=(principal.name,))
        password_hash = await self._hasher.hash(password)
        if revoke_sessions:
            await self._revocations.revoke(RevocationKind.SUBJECT, principal.id)
        event = self._event(
            "principal.password_set",
            principal,
            name=principal.name,
            sessions_revoked=revoke_sessions,
        )
        return await self._updated(principal.id, password_hash=password_hash, events=(event,))

    async def delete(self, name: str) -> bool:
        principal = await self._store.get_principal_by_name(principal_key(name))
        if principal is None:
            return False
        await self._revocations.revoke(RevocationKind.SUBJECT, principal.id)
        event = self._event("principal.deleted", principal, name=principal.name)
        return await self._store.delete_principal(principal.id, events=(event,))

    async def _updated(
        self,
        principal_id: str,
        *,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: tuple[Event, ...] = (),
    ) -> Principal:
        updated = await self._store.update_principal(
            principal_id, password_hash=password_hash, disabled=disabled, events=events
        )
        if updated is None:
            raise NotFound("the principal was deleted meanwhile")
        return updated
