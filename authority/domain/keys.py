"""Signing-key lifecycle as a pure function of the configuration and the clock.

A key is PENDING (published, not signing) from ``published_at`` until
``activates_at``; ACTIVE until ``retires_at`` (set only once a successor is
scheduled, to the successor's ``activates_at``, so exactly one key signs at any
instant); RETIRED while tokens it signed can still be alive; then REMOVED. A
COMPROMISED key is removed at once. Nothing here reads a clock or touches
storage: the key manager feeds in ``now`` and applies the returned plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from authority.domain.errors import InvalidArgument, NotFound


class Algorithm(StrEnum):
    """JWS algorithms a key may sign with (one per key)."""

    EDDSA = "EdDSA"
    ES256 = "ES256"
    RS256 = "RS256"


class KeyState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    REMOVED = "removed"
    COMPROMISED = "compromised"


PUBLISHED_STATES = frozenset({KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRED})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A persisted signing key. ``wrapped_private_key`` is an encrypted envelope, never clear."""

    kid: str
    algorithm: Algorithm
    public_jwk: Mapping[str, str]
    wrapped_private_key: bytes
    kek_id: str
    published_at: datetime
    activates_at: datetime
    retires_at: datetime | None = None
    compromised_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key the plan asks the manager to create."""

    algorithm: Algorithm
    activates_at: datetime


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """New schedule times for an existing key. A field left as None is unchanged,
    except ``clear_retires_at`` which resets a retirement that no longer has a successor."""

    kid: str
    activates_at: datetime | None = None
    retires_at: datetime | None = None
    clear_retires_at: bool = False
    compromised_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What to change in the key ring. Empty when nothing is due."""

    create: NewKey | None = None
    updates: tuple[KeyUpdate, ...] = ()
    prune: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return self.create is None and not self.updates and not self.prune


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The rotation rules. Every duration comes from configuration."""

    rotation_period: timedelta
    prepublish: timedelta
    max_token_ttl: timedelta
    leeway: timedelta
    algorithm: Algorithm = Algorithm.EDDSA

    def __post_init__(self) -> None:
        if self.rotation_period <= self.prepublish:
            raise InvalidArgument(
                "the rotation period must be longer than the pre-publication period"
            )
        for name in ("prepublish", "max_token_ttl", "leeway"):
            if getattr(self, name) < timedelta(0):
                raise InvalidArgument(f"{name} must not be negative")

    # -- state ----------------------------------------------------------

    def removed_at(self, key: KeyRecord) -> datetime | None:
        """When the key leaves the JWKS: its last token's expiry plus leeway."""
        if key.compromised_at is not None:
            return key.compromised_at
        if key.retires_at is None:
            return None
        return key.retires_at + self.max_token_ttl + self.leeway

    def state(self, key: KeyRecord, now: datetime) -> KeyState:
        if key.compromised_at is not None and key.compromised_at <= now:
            return KeyState.COMPROMISED
        if now < key.activates_at:
            return KeyState.PENDING
        if key.retires_at is None or now < key.retires_at:
            return KeyState.ACTIVE
        removed_at = self.removed_at(key)
        if removed_at is not None and now >= removed_at:
            return KeyState.REMOVED
        return KeyState.RETIRED

    def signing_key(self, keys: Sequence[KeyRecord], now: datetime) -> KeyRecord | None:
        """The one ACTIVE key (the latest-activated, should overlapping data ever exist)."""
        active = [k for k in keys if self.state(k, now) is KeyState.ACTIVE]
        return max(active, key=lambda k: k.activates_at, default=None)

    def published(self, keys: Sequence[KeyRecord], now: datetime) -> list[KeyRecord]:
        """The keys in the JWKS, newest first."""
        live = [k for k in keys if self.state(k, now) in PUBLISHED_STATES]
        return sorted(live, key=lambda k: k.published_at, reverse=True)

    def next_change(self, keys: Sequence[KeyRecord], now: datetime) -> datetime | None:
        """The next instant at which some key changes state (for cache lifetimes and timers)."""
        instants: list[datetime] = []
        for key in keys:
            for instant in (key.activates_at, key.retires_at, self.removed_at(key)):
                if instant is not None and instant > now:
                    instants.append(instant)
        signer = self.signing_key(keys, now)
        if signer is not None and self._successor(keys, signer, now) is None:
            instants.append(max(now, self._rotation_due(signer)))
        return min(instants, default=None)

    # -- plans ----------------------------------------------------------

    def _rotation_due(self, signer: KeyRecord) -> datetime:
        return signer.activates_at + self.rotation_period - self.prepublish

    def _successor(
        self, keys: Sequence[KeyRecord], signer: KeyRecord, now: datetime
    ) -> KeyRecord | None:
        pending = [
            k
            for k in keys
            if self.state(k, now) is KeyState.PENDING and k.activates_at > signer.activates_at
        ]
        return min(pending, key=lambda k: k.activates_at, default=None)

    def _prunable(self, keys: Sequence[KeyRecord], now: datetime) -> tuple[str, ...]:
        """Removed keys, and compromised keys once their tokens would have expired anyway."""
        horizon = self.max_token_ttl + self.leeway
        return tuple(
            k.kid
            for k in keys
            if self.state(k, now) is KeyState.REMOVED
            or (k.compromised_at is not None and now >= k.compromised_at + horizon)
        )

    def plan(
        self,
        keys: Sequence[KeyRecord],
        now: datetime,
        *,
        force: bool = False,
        algorithm: Algorithm | None = None,
    ) -> KeyPlan:
        """The scheduled (or, with ``force``, a planned) rotation due at ``now``.

        A new key is always published ``prepublish`` before it signs, except when
        there is no signing key at all (first start), where there is nothing a
        verifier could have cached and the new key signs at once.
        """
        prune = self._prunable(keys, now)
        signer = self.signing_key(keys, now)
        new_algorithm = algorithm or self.algorithm
        if signer is None:
            pending = [k for k in keys if self.state(k, now) is KeyState.PENDING]
            if pending:
                # No signer but a published successor: it signs from now on.
                first = min(pending, key=lambda k: k.activates_at)
                return KeyPlan(updates=(KeyUpdate(first.kid, activates_at=now),), prune=prune)
            return KeyPlan(create=NewKey(new_algorithm, activates_at=now), prune=prune)
        if self._successor(keys, signer, now) is not None:
            return KeyPlan(prune=prune)  # a rotation is already under way
        if not force and now < self._rotation_due(signer):
            return KeyPlan(prune=prune)
        activates_at = now + self.prepublish
        if not force:
            activates_at = max(activates_at, signer.activates_at + self.rotation_period)
        return KeyPlan(
            create=NewKey(new_algorithm, activates_at=activates_at),
            updates=(KeyUpdate(signer.kid, retires_at=activates_at),),
            prune=prune,
        )

    def compromise(self, keys: Sequence[KeyRecord], kid: str, now: datetime) -> KeyPlan:
        """Remove ``kid`` at once; make sure a key still signs afterwards."""
        target = next((k for k in keys if k.kid == kid), None)
        if target is None:
            raise NotFound(f"no key with kid {kid!r}")
        state = self.state(target, now)
        if state is KeyState.COMPROMISED:
            return KeyPlan()
        if state is KeyState.REMOVED:
            raise InvalidArgument(f"key {kid!r} is no longer published")
        updates = [KeyUpdate(kid, compromised_at=now)]
        create: NewKey | None = None
        signer = self.signing_key(keys, now)
        if state is KeyState.ACTIVE:
            successor = self._successor(keys, target, now)
            if successor is not None:
                updates.append(KeyUpdate(successor.kid, activates_at=now))
            else:
                create = NewKey(target.algorithm, activates_at=now)
        elif state is KeyState.PENDING and signer is not None and signer.retires_at is not None:
            others = [k for k in keys if k.kid != kid]
            if self._successor(others, signer, now) is None:
                updates.append(KeyUpdate(signer.kid, clear_retires_at=True))
        return KeyPlan(create=create, updates=tuple(updates))


def apply_update(key: KeyRecord, update: KeyUpdate) -> KeyRecord:
    """The record after ``update`` (used by stores and by tests of plans)."""
    if update.kid != key.kid:
        raise InvalidArgument("update applied to the wrong key")
    retires_at = None if update.clear_retires_at else (update.retires_at or key.retires_at)
    return replace(
        key,
        activates_at=update.activates_at or key.activates_at,
        retires_at=retires_at,
        compromised_at=update.compromised_at or key.compromised_at,
    )
