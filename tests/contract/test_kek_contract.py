"""The KEK-rotation part of the Store contract: ``KeyRingTransaction.rewrap_key``, and
`authority kek rotate`'s re-wrapping on top of it, on every backend.

Why here and not only end to end: a rotation rewrites every private key in place, so
a backend that also touched the schedule, resurrected a compromised key's material,
or committed half a rotation would break signing across the fleet.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from authority.crypto import EnvelopeError, Kek, KekRing, envelope_kek_id
from authority.domain.errors import NotFound
from authority.domain.keys import KeyRecord
from authority.domain.webhooks import Webhook
from authority.keys.manager import private_key_aad
from authority.services.kek_rotation import rewrap_keys
from authority.services.webhooks import webhook_secret_aad
from authority.store.base import Store

from .builders import T0, insert_keys, make_key, stored_key

OpenStore = Callable[[], Awaitable[Store]]

OLD = Kek.from_secret(os.urandom(32))
NEW = Kek.from_secret(os.urandom(32))
STRANGER = Kek.from_secret(os.urandom(32))
PRIVATE = b"private key bytes for "


def sealed(kid: str, kek: Kek, **changes: Any) -> KeyRecord:
    """A key whose envelope really is sealed by ``kek``, bound to its kid as the manager does."""
    blob = KekRing(kek).wrap(PRIVATE + kid.encode(), aad=private_key_aad(kid))
    return make_key(kid, wrapped_private_key=blob, kek_id=kek.id, **changes)


# -- rewrap_key ---------------------------------------------------------------------


async def test_rewrap_replaces_only_the_envelope_and_the_kek_id(store: Store) -> None:
    key = make_key("k1", retires_at=T0.replace(year=2026))
    await insert_keys(store, key)
    generation = await store.key_ring_generation()

    async with store.key_ring_transaction() as tx:
        await tx.rewrap_key("k1", b"new envelope", "kek-2")

    assert await stored_key(store, "k1") == replace(
        key, wrapped_private_key=b"new envelope", kek_id="kek-2"
    )
    assert await store.key_ring_generation() > generation  # servers reload the ring


async def test_a_compromised_key_is_skipped_and_gets_no_material_back(store: Store) -> None:
    await insert_keys(store, make_key("k1", compromised_at=T0))
    before = await stored_key(store, "k1")

    async with store.key_ring_transaction() as tx:
        await tx.rewrap_key("k1", b"new envelope", "kek-2")

    after = await stored_key(store, "k1")
    assert after == before
    assert after.wrapped_private_key == b""
    assert after.kek_id == "kek-1"


async def test_rewrapping_an_unknown_key_is_not_found_and_rolls_back(store: Store) -> None:
    await insert_keys(store, make_key("k1"))

    async def rewrap_both() -> None:
        async with store.key_ring_transaction() as tx:
            await tx.rewrap_key("k1", b"new envelope", "kek-2")
            await tx.rewrap_key("missing", b"new envelope", "kek-2")

    with pytest.raises(NotFound):
        await rewrap_both()

    assert (await stored_key(store, "k1")).kek_id == "kek-1"


async def test_a_rewrap_is_visible_to_another_replica_after_commit(
    store: Store, open_store: OpenStore
) -> None:
    await insert_keys(store, make_key("k1"))
    replica = await open_store()

    async with store.key_ring_transaction() as tx:
        await tx.rewrap_key("k1", b"new envelope", "kek-2")
    assert (await stored_key(replica, "k1")).wrapped_private_key == b"new envelope"


# -- authority kek rotate, over the store -------------------------------------------


async def test_rotation_moves_every_key_under_the_current_kek(store: Store) -> None:
    await insert_keys(
        store,
        sealed("old-1", OLD),
        sealed("old-2", OLD),
        sealed("new-1", NEW),
        make_key("gone", compromised_at=T0),
    )
    ring = KekRing(NEW, [OLD])

    result = await rewrap_keys(store, ring)

    assert result == {
        "rewrapped": 2,
        "already_current": 1,
        "without_private_key": 1,
        "webhook_secrets_rewrapped": 0,
    }
    only_new = KekRing(NEW)
    for key in await store.list_keys():
        if key.kid == "gone":
            assert key.wrapped_private_key == b""
            continue
        assert key.kek_id == NEW.id
        assert envelope_kek_id(key.wrapped_private_key) == NEW.id
        opened = only_new.unwrap(key.wrapped_private_key, aad=private_key_aad(key.kid))
        assert opened == PRIVATE + key.kid.encode()


async def test_rotation_is_idempotent(store: Store) -> None:
    await insert_keys(store, sealed("old-1", OLD))
    ring = KekRing(NEW, [OLD])
    await rewrap_keys(store, ring)
    before = await store.list_keys()

    again = await rewrap_keys(store, ring)

    assert again == {
        "rewrapped": 0,
        "already_current": 1,
        "without_private_key": 0,
        "webhook_secrets_rewrapped": 0,
    }
    assert await store.list_keys() == before  # not even re-sealed with a fresh DEK


async def test_rotation_refuses_a_key_under_an_unknown_kek_and_changes_nothing(
    store: Store,
) -> None:
    await insert_keys(
        store,
        sealed("old-1", OLD),
        sealed("foreign", STRANGER),
    )
    before = await store.list_keys()

    with pytest.raises(EnvelopeError) as raised:
        await rewrap_keys(store, KekRing(NEW, [OLD]))

    assert STRANGER.id in raised.value.message
    assert "'foreign'" in raised.value.message
    assert sorted(await store.list_keys(), key=lambda k: k.kid) == sorted(
        before, key=lambda k: k.kid
    )


async def test_kek_rotate_moves_webhook_secrets_too(store: Store) -> None:
    """A webhook's signing secret is wrapped by the same KEK: once rotated, it opens with
    the new KEK alone, so retiring the old one does not silence webhooks."""
    secret = b"whsec_signing-secret-for-the-test"
    hook = Webhook(
        id="wh_1",
        url="http://127.0.0.1:9/hook",
        event_types=(),
        wrapped_secret=KekRing(OLD).wrap(secret, aad=webhook_secret_aad("wh_1")),
        created_at=T0,
    )
    await store.create_webhook(hook)
    result = await rewrap_keys(store, KekRing(NEW, [OLD]))
    assert result["webhook_secrets_rewrapped"] == 1
    (stored,) = await store.list_webhooks()
    assert envelope_kek_id(stored.wrapped_secret) == NEW.id
    assert KekRing(NEW).unwrap(stored.wrapped_secret, aad=webhook_secret_aad("wh_1")) == secret
    again = await rewrap_keys(store, KekRing(NEW, [OLD]))
    assert again["webhook_secrets_rewrapped"] == 0
    events = [e.event for e in await store.read_outbox()]
    rotated = [e for e in events if e.type == "kek.rotated"]
    assert len(rotated) == 1  # recorded once, by the run that moved something
    assert rotated[0].aggregate_id == NEW.id
