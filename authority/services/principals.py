"""Principals: create, look up, disable, change password, delete.

Disabling, deleting or changing the password (unless asked to keep the sessions)
revokes every session and access token of the principal at once, in the same
transaction as the change: those are security actions, ordered with every login
(see ``CredentialStore.change_credentials``).
"""

from __future__ import annotations

import secrets

from authority.domain.clients import PRINCIPAL_ID_PREFIX
from authority.domain.clock import Clock
from authority.domain.errors import AlreadyExists, NotFound
from authority.domain.events import PRINCIPAL, Event, new_event
from authority.domain.password_policy import PasswordPolicy
from authority.domain.principals import Principal, principal_key, validate_new_name
from authority.services.passwords import PasswordHasher
from authority.services.revocations import RevocationService
from authority.store.base import PrincipalStore


def new_principal_id() -> str:
    return PRINCIPAL_ID_PREFIX + secrets.token_hex(12)


class PrincipalService:
    def __init__(
        self,
        *,
        store: PrincipalStore,
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
        """Disabling ends every session and token of the principal; enabling ends none.
        Both are credential changes: a login in flight that read the old state fails."""
        principal = await self.get(name)
        action = "principal.disabled" if disabled else "principal.enabled"
        event = self._event(action, principal, name=principal.name)
        return await self._changed(principal, revoke=disabled, disabled=disabled, events=(event,))

    async def set_password(self, name: str, password: str, *, keep_sessions: bool) -> Principal:
        """Ends every other session and token of the principal unless ``keep_sessions``
        (NIST SP 800-63B, OWASP: a changed password must end what the old one opened).
        Either way, no login that checked the old password can start a session after this
        returns."""
        principal = await self.get(name)
        password = self._policy.check(password, context=(principal.name,))
        password_hash = await self._hasher.hash(password)
        event = self._event(
            "principal.password_set",
            principal,
            name=principal.name,
            sessions_revoked=not keep_sessions,
        )
        return await self._changed(
            principal, revoke=not keep_sessions, password_hash=password_hash, events=(event,)
        )

    async def delete(self, name: str) -> bool:
        principal = await self._store.get_principal_by_name(principal_key(name))
        if principal is None:
            return False
        event = self._event("principal.deleted", principal, name=principal.name)
        applied = await self._revocations.change_credentials(
            principal.id, revoke=True, delete=True, events=(event,)
        )
        return applied.principal is not None

    async def _changed(
        self,
        principal: Principal,
        *,
        revoke: bool,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: tuple[Event, ...] = (),
    ) -> Principal:
        applied = await self._revocations.change_credentials(
            principal.id,
            revoke=revoke,
            password_hash=password_hash,
            disabled=disabled,
            events=events,
        )
        if applied.principal is None:
            raise NotFound("the principal was deleted meanwhile")
        return applied.principal
