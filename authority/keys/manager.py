"""The key manager: owns the key ring's persistence, timing and in-memory view.

Three roles, as in SPIRE: the pure ``KeyPolicy`` decides, this manager applies
the decision under the store's exclusive key-ring transaction (so concurrent
replicas never both rotate), and ``run`` is the loop that owns timing. Private
keys are decrypted only into memory and only for keys that may still sign.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from authority.crypto import (
    KekRing,
    generate_private_key,
    private_key_from_bytes,
    private_key_to_bytes,
    public_jwk,
)
from authority.domain.clock import Clock
from authority.domain.errors import Unavailable
from authority.domain.events import KEY, Event, new_event
from authority.domain.keys import (
    Algorithm,
    KeyPlan,
    KeyPolicy,
    KeyRecord,
    KeyState,
    KeyUpdate,
)
from authority.keys.kek_check import prove_keys
from authority.keys.snapshot import KeyRingSnapshot, build_snapshot
from authority.lifecycle import wait_event
from authority.ports.fanout import Fanout, LocalFanout
from authority.store.base import KeyRingTransaction, KeyStore

log = structlog.get_logger(__name__)


def private_key_aad(kid: str) -> bytes:
    """Binds a wrapped private key to its kid, so blobs cannot be swapped between rows.

    Public because `authority kek rotate` re-wraps keys outside the manager and must
    bind them exactly as the manager does, or the servers could not open them.
    """
    return b"authority-signing-key:" + kid.encode()


def _update_events(update: KeyUpdate, now: datetime) -> list[Event]:
    """The outbox events of one schedule change (public schedule times only; the private
    key never appears in an event)."""
    events = []
    if update.compromised_at is not None:
        at = update.compromised_at.isoformat()
        events.append(new_event("key.compromised", KEY, update.kid, at=now, data={"at": at}))
    if update.activates_at is not None:
        at = update.activates_at.isoformat()
        events.append(new_event("key.activated", KEY, update.kid, at=now, data={"at": at}))
    if update.retires_at is not None:
        at = update.retires_at.isoformat()
        events.append(new_event("key.retired", KEY, update.kid, at=now, data={"at": at}))
    return events


@dataclass(frozen=True, slots=True)
class RotationResult:
    next_key: KeyRecord | None
    current_key: KeyRecord | None


class KeyManager:
    def __init__(
        self,
        *,
        store: KeyStore,
        kek: KekRing,
        policy: KeyPolicy,
        clock: Clock,
        jwks_max_age: timedelta,
        check_interval: timedelta,
        fanout: Fanout | None = None,
    ) -> None:
        self._store = store
        self._fanout: Fanout = fanout or LocalFanout()
        self._kek = kek
        self._policy = policy
        self._clock = clock
        self._jwks_max_age = jwks_max_age
        self._check_interval = check_interval
        self._records: tuple[KeyRecord, ...] = ()
        self._private: dict[str, Any] = {}
        self._generation = -1
        self._snapshot: KeyRingSnapshot | None = None
        self._valid_until = math.inf  # the snapshot's valid_until, as a timestamp
        self._changed = asyncio.Event()
        self.failures = 0
        # Each tick's outcome (True: it succeeded), for readiness (WriteHealth).
        self.on_outcome: Callable[[bool], None] = lambda ok: None

    @property
    def policy(self) -> KeyPolicy:
        return self._policy

    # -- reading ------------------------------------------------------------

    def snapshot(self) -> KeyRingSnapshot:
        """The current view; rebuilt without I/O when a scheduled transition has passed."""
        snapshot = self._snapshot
        if snapshot is None:
            raise Unavailable("the key ring is not loaded yet")
        # Every Verify asks: compared as a float (clock.timestamp is cheap; a datetime
        # from clock.now is not). Distinct microseconds stay distinct floats until 2242.
        if self._clock.timestamp() >= self._valid_until:
            snapshot = self._rebuild()
        return snapshot

    def _rebuild(self) -> KeyRingSnapshot:
        previous = self._snapshot
        reuse = (
            {kid: key.public_key for kid, key in previous.verification_keys.items()}
            if previous
            else None
        )
        self._snapshot = build_snapshot(
            self._records,
            self._private,
            self._policy,
            self._clock.now(),
            jwks_max_age=self._jwks_max_age,
            public_keys=reuse,
        )
        until = self._snapshot.valid_until
        self._valid_until = math.inf if until is None else until.timestamp()
        return self._snapshot

    async def reload(self) -> bool:
        """Re-read the key ring if another writer changed it; True when it changed."""
        generation = await self._store.key_ring_generation()
        if generation == self._generation:
            return False
        records = await self._store.list_keys()
        await self._load(records, generation)
        return True

    async def _load(self, records: list[KeyRecord], generation: int) -> None:
        now = self._clock.now()
        private: dict[str, Any] = {}
        for record in records:
            state = self._policy.state(record, now)
            if state in (KeyState.PENDING, KeyState.ACTIVE) and record.wrapped_private_key:
                private[record.kid] = self._private.get(record.kid) or private_key_from_bytes(
                    self._kek.unwrap(record.wrapped_private_key, aad=private_key_aad(record.kid)),
                    record.algorithm,
                )
        self._records = tuple(records)
        self._private = private
        self._generation = generation
        self._rebuild()
        self._changed.set()

    # -- writing ------------------------------------------------------------

    async def _new_record(
        self, algorithm: Algorithm, activates_at: datetime, published_at: datetime
    ) -> KeyRecord:
        # RSA generation takes long enough to matter on the event loop.
        private_key = await asyncio.to_thread(generate_private_key, algorithm)
        jwk = public_jwk(private_key, algorithm)
        kid = jwk["kid"]
        wrapped = self._kek.wrap(private_key_to_bytes(private_key), aad=private_key_aad(kid))
        return KeyRecord(
            kid=kid,
            algorithm=algorithm,
            public_jwk=jwk,
            wrapped_private_key=wrapped,
            kek_id=self._kek.current_id,
            published_at=published_at,
            activates_at=activates_at,
        )

    async def _apply(
        self, tx: KeyRingTransaction, plan: KeyPlan, now: datetime
    ) -> KeyRecord | None:
        created = None
        if plan.create is not None:
            created = await self._new_record(plan.create.algorithm, plan.create.activates_at, now)
            await tx.insert_key(created)
            await tx.add_event(
                new_event(
                    "key.created",
                    KEY,
                    created.kid,
                    at=now,
                    data={
                        "algorithm": created.algorithm.value,
                        "activates_at": created.activates_at.isoformat(),
                    },
                )
            )
        for update in plan.updates:
            await tx.update_key(update)
            for event in _update_events(update, now):
                await tx.add_event(event)
        if plan.prune:
            await tx.delete_keys(plan.prune)
            for kid in plan.prune:
                await tx.add_event(new_event("key.pruned", KEY, kid, at=now))
        return created

    async def _transact(self, decide: Any) -> tuple[list[KeyRecord], KeyRecord | None]:
        """Read, decide and write under the exclusive key-ring lock, then reload."""
        async with self._store.key_ring_transaction() as tx:
            before = await tx.list_keys()
            # Under the lock, on what is there now: a replica holding a wrong KEK never
            # seals a key into a ring the others share (KekMismatch rolls back).
            prove_keys(self._kek, before, aad=private_key_aad)
            now = self._clock.now()
            plan: KeyPlan = decide(before, now)
            created = None if plan.empty else await self._apply(tx, plan, now)
            changed = not plan.empty
        if changed:
            for event, kid in self._describe(plan, created):
                log.info(event, kid=kid)
        await self.reload()
        if changed:
            try:
                await self._fanout.publish_key_ring_changed()
            except Unavailable:
                log.warning("key.fanout_unavailable")  # the others poll the generation
        return before, created

    @staticmethod
    def _describe(plan: KeyPlan, created: KeyRecord | None) -> list[tuple[str, str]]:
        events = [("key.created", created.kid)] if created else []
        events += [("key.compromised", u.kid) for u in plan.updates if u.compromised_at]
        events += [("key.pruned", kid) for kid in plan.prune]
        return events

    async def ensure(self) -> None:
        """Apply whatever the policy says is due now (bootstrap, scheduled rotation, pruning).

        The in-memory view decides whether anything is due, so an idle tick takes no lock;
        the decision is then made again under the lock, on fresh data.
        """
        if self._snapshot is not None and self._policy.plan(self._records, self._clock.now()).empty:
            return
        await self._transact(self._policy.plan)

    async def rotate(self, algorithm: Algorithm | None = None) -> RotationResult:
        """A planned rotation: publish a new key now; it signs after the pre-publication period."""
        await self._transact(
            lambda keys, now: self._policy.plan(keys, now, force=True, algorithm=algorithm)
        )
        now = self._clock.now()
        records = self.snapshot().records
        current = self._policy.signing_key(records, now)
        pending = [r for r in records if self._policy.state(r, now) is KeyState.PENDING]
        next_key = min(pending, key=lambda r: r.activates_at, default=None)
        return RotationResult(next_key=next_key, current_key=current)

    async def compromise(self, kid: str) -> RotationResult:
        """Remove ``kid`` at once; a published pending key, or a new one, signs from now."""
        await self._transact(lambda keys, now: self._policy.compromise(keys, kid, now))
        records = self.snapshot().records
        target = next((r for r in records if r.kid == kid), None)
        return RotationResult(
            next_key=self._policy.signing_key(records, self._clock.now()), current_key=target
        )

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Prove the KEK opens the stored ring, load it, then apply what is due.

        Loading first means a start with nothing due takes no lock and writes nothing
        (not even a generation bump); a wrong KEK fails here, before any write."""
        prove_keys(self._kek, await self._store.list_keys(), aad=private_key_aad)
        await self.reload()
        await self.ensure()

    async def run(self) -> None:
        """Wake at the next scheduled transition or the poll interval, whichever is first.

        Failures (storage down) are counted and logged; the loop carries on with the
        last good view, which keeps verifying and signing.
        """
        while True:
            snapshot = self._snapshot
            delay = self._check_interval.total_seconds()
            if snapshot is not None and snapshot.valid_until is not None:
                until = (snapshot.valid_until - self._clock.now()).total_seconds()
                delay = max(0.05, min(delay, until))
            self._changed.clear()
            # Not wait_for: on 3.11 it swallows a cancellation that arrives as the event
            # is set, and this loop would then outlive the server's stop.
            if await wait_event(self._changed, delay):
                continue  # changed in-process: recompute the delay
            try:
                await self.reload()
                await self.ensure()
                self.failures = 0
                self.on_outcome(True)
            except Exception:
                self.failures += 1
                log.exception("key.tick_failed", consecutive_failures=self.failures)
                self.on_outcome(False)
