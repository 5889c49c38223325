"""The key lifecycle rules, driven by a manual clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authority.domain.errors import InvalidArgument, NotFound
from authority.domain.keys import (
    Algorithm,
    KeyPlan,
    KeyPolicy,
    KeyRecord,
    KeyState,
    apply_update,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = KeyPolicy(
    rotation_period=timedelta(days=14),
    prepublish=timedelta(hours=1),
    max_token_ttl=timedelta(minutes=10),
    leeway=timedelta(seconds=30),
)


class Ring:
    """Applies plans the way the key manager and a store would."""

    def __init__(self, policy: KeyPolicy = POLICY) -> None:
        self.policy = policy
        self.keys: list[KeyRecord] = []
        self.counter = 0

    def apply(self, plan: KeyPlan, now: datetime) -> None:
        by_kid = {k.kid: k for k in self.keys}
        for update in plan.updates:
            by_kid[update.kid] = apply_update(by_kid[update.kid], update)
        for kid in plan.prune:
            by_kid.pop(kid, None)
        if plan.create is not None:
            self.counter += 1
            kid = f"k{self.counter}"
            by_kid[kid] = KeyRecord(
                kid=kid,
                algorithm=plan.create.algorithm,
                public_jwk={"kid": kid},
                wrapped_private_key=b"x",
                kek_id="kek",
                published_at=now,
                activates_at=plan.create.activates_at,
            )
        self.keys = list(by_kid.values())

    def tick(self, now: datetime, **kwargs: object) -> KeyPlan:
        plan = self.policy.plan(self.keys, now, **kwargs)  # type: ignore[arg-type]
        self.apply(plan, now)
        return plan

    def states(self, now: datetime) -> dict[str, KeyState]:
        return {k.kid: self.policy.state(k, now) for k in self.keys}


def test_first_start_creates_a_key_that_signs_at_once() -> None:
    ring = Ring()
    ring.tick(T0)
    assert ring.states(T0) == {"k1": KeyState.ACTIVE}
    assert ring.policy.signing_key(ring.keys, T0).kid == "k1"  # type: ignore[union-attr]


def test_nothing_happens_before_the_rotation_is_due() -> None:
    ring = Ring()
    ring.tick(T0)
    assert ring.tick(T0 + timedelta(days=13, hours=22)).empty


def test_scheduled_rotation_prepublishes_then_switches_exactly_at_activation() -> None:
    ring = Ring()
    ring.tick(T0)
    due = T0 + POLICY.rotation_period - POLICY.prepublish
    ring.tick(due)
    new = next(k for k in ring.keys if k.kid == "k2")
    assert new.activates_at == T0 + POLICY.rotation_period
    assert ring.states(due) == {"k1": KeyState.ACTIVE, "k2": KeyState.PENDING}
    switch = new.activates_at
    before = switch - timedelta(microseconds=1)
    assert ring.states(before) == {"k1": KeyState.ACTIVE, "k2": KeyState.PENDING}
    assert ring.states(switch) == {"k1": KeyState.RETIRED, "k2": KeyState.ACTIVE}


def test_retired_key_stays_published_until_its_last_token_expires_plus_leeway() -> None:
    ring = Ring()
    ring.tick(T0)
    ring.tick(T0, force=True)
    switch = T0 + POLICY.prepublish
    gone = switch + POLICY.max_token_ttl + POLICY.leeway
    just_before = gone - timedelta(microseconds=1)
    assert ring.states(just_before) == {"k1": KeyState.RETIRED, "k2": KeyState.ACTIVE}
    assert {k.kid for k in POLICY.published(ring.keys, just_before)} == {"k1", "k2"}
    assert ring.states(gone)["k1"] is KeyState.REMOVED
    assert [k.kid for k in POLICY.published(ring.keys, gone)] == ["k2"]
    plan = ring.tick(gone)
    assert plan.prune == ("k1",)
    assert [k.kid for k in ring.keys] == ["k2"]


def test_forced_rotation_is_idempotent_while_one_is_pending() -> None:
    ring = Ring()
    ring.tick(T0)
    first = ring.tick(T0 + timedelta(minutes=1), force=True)
    assert first.create is not None
    assert ring.tick(T0 + timedelta(minutes=2), force=True).empty
    assert len(ring.keys) == 2


def test_forced_rotation_may_choose_another_algorithm() -> None:
    ring = Ring()
    ring.tick(T0)
    plan = ring.tick(T0, force=True, algorithm=Algorithm.ES256)
    assert plan.create is not None
    assert plan.create.algorithm is Algorithm.ES256


def test_compromising_the_active_key_promotes_the_pending_one_at_once() -> None:
    ring = Ring()
    ring.tick(T0)
    ring.tick(T0, force=True)
    now = T0 + timedelta(minutes=5)
    ring.apply(POLICY.compromise(ring.keys, "k1", now), now)
    assert ring.states(now) == {"k1": KeyState.COMPROMISED, "k2": KeyState.ACTIVE}
    assert [k.kid for k in POLICY.published(ring.keys, now)] == ["k2"]


def test_compromising_the_only_key_creates_a_new_signer_at_once() -> None:
    ring = Ring()
    ring.tick(T0)
    now = T0 + timedelta(days=1)
    ring.apply(POLICY.compromise(ring.keys, "k1", now), now)
    assert ring.states(now) == {"k1": KeyState.COMPROMISED, "k2": KeyState.ACTIVE}


def test_compromising_a_pending_key_keeps_the_signer_and_reschedules_later() -> None:
    ring = Ring()
    ring.tick(T0)
    ring.tick(T0, force=True)
    ring.apply(POLICY.compromise(ring.keys, "k2", T0), T0)
    later = T0 + timedelta(days=1)
    assert ring.states(later) == {"k1": KeyState.ACTIVE, "k2": KeyState.COMPROMISED}
    assert ring.tick(later, force=True).create is not None  # a new rotation can be planned


def test_compromise_is_idempotent_and_rejects_unknown_or_removed_keys() -> None:
    ring = Ring()
    ring.tick(T0)
    ring.apply(POLICY.compromise(ring.keys, "k1", T0), T0)
    assert POLICY.compromise(ring.keys, "k1", T0).empty
    with pytest.raises(NotFound):
        POLICY.compromise(ring.keys, "nope", T0)
    long_retired = replace(ring.keys[0], kid="old", retires_at=T0, compromised_at=None)
    later = T0 + timedelta(days=1)
    assert POLICY.state(long_retired, later) is KeyState.REMOVED
    with pytest.raises(InvalidArgument):
        POLICY.compromise([long_retired], "old", later)


def test_policy_rejects_a_rotation_period_shorter_than_prepublication() -> None:
    with pytest.raises(InvalidArgument):
        KeyPolicy(
            rotation_period=timedelta(minutes=30),
            prepublish=timedelta(hours=1),
            max_token_ttl=timedelta(minutes=10),
            leeway=timedelta(0),
        )


def test_next_change_is_the_earliest_transition() -> None:
    ring = Ring()
    ring.tick(T0)
    assert POLICY.next_change(ring.keys, T0) == T0 + POLICY.rotation_period - POLICY.prepublish
    ring.tick(T0, force=True)
    assert POLICY.next_change(ring.keys, T0) == T0 + POLICY.prepublish


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["wait", "force", "compromise"]),
        st.integers(min_value=0, max_value=20 * 24 * 3600),
        st.integers(min_value=0, max_value=10),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_lifecycle_invariants_hold_for_any_sequence(steps: list[tuple[str, int, int]]) -> None:
    """Exactly one signer after every tick; a key is always published before it signs
    (except at first start and after a compromise); a token signed at any instant stays
    verifiable until it expires, unless its key was compromised."""
    ring = Ring()
    now = T0
    ring.tick(now)
    signed: list[tuple[str, datetime]] = []  # (kid, signed at)
    emergency: set[str] = {"k1"}  # keys allowed to sign without pre-publication
    for action, seconds, pick in steps:
        now += timedelta(seconds=seconds)
        if action == "force":
            ring.tick(now, force=True)
        elif action == "compromise":
            live = POLICY.published(ring.keys, now)
            if live:
                kid = live[pick % len(live)].kid
                plan = POLICY.compromise(ring.keys, kid, now)
                emergency.update(u.kid for u in plan.updates if u.activates_at == now)
                ring.apply(plan, now)
                if plan.create is not None:
                    emergency.add(f"k{ring.counter}")
        ring.tick(now)
        active = [k for k in ring.keys if POLICY.state(k, now) is KeyState.ACTIVE]
        assert len(active) == 1
        signer = active[0]
        signed.append((signer.kid, now))
        published = {k.kid for k in POLICY.published(ring.keys, now)}
        by_kid = {k.kid: k for k in ring.keys}
        for kid, at in signed:
            key = by_kid.get(kid)
            if key is not None and key.compromised_at is not None:
                continue
            if now < at + POLICY.max_token_ttl + POLICY.leeway:
                assert kid in published, "a live token's key left the JWKS"
        for key in ring.keys:
            if key.kid not in emergency:
                assert key.activates_at - key.published_at >= POLICY.prepublish
