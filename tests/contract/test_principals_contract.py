"""The principals facet of the store contract."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authority.domain.errors import AlreadyExists
from authority.domain.principals import Principal
from authority.store.base import Store

from .builders import HASH, OTHER_HASH, T0, is_utc_aware, make_principal


async def test_principals_round_trip_exactly(store: Store) -> None:
    principal = Principal(
        id="p-ü-1", name="Zoë Ångström", password_hash=HASH, disabled=True, created_at=T0
    )
    await store.create_principal(principal)

    assert await store.get_principal("p-ü-1") == principal
    by_name = await store.get_principal_by_name("Zoë Ångström")
    assert by_name == principal
    assert by_name is not None
    assert is_utc_aware(by_name.created_at)


async def test_a_taken_name_is_refused_without_revealing_the_hash(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    with pytest.raises(AlreadyExists) as caught:
        await store.create_principal(make_principal("alice", "p-2"))

    assert "alice" in caught.value.message
    assert HASH not in caught.value.message
    assert await store.get_principal("p-2") is None


async def test_a_taken_id_is_refused(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    with pytest.raises(AlreadyExists):
        await store.create_principal(make_principal("bob", "p-1"))

    assert await store.get_principal_by_name("bob") is None


async def test_unknown_principals_are_none(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))

    assert await store.get_principal("p-404") is None
    assert await store.get_principal_by_name("nobody") is None


async def test_update_principal_changes_only_the_given_fields(store: Store) -> None:
    await store.create_principal(make_principal())

    unchanged = await store.update_principal("p-1")
    rehashed = await store.update_principal("p-1", password_hash=OTHER_HASH)
    disabled = await store.update_principal("p-1", disabled=True)
    both = await store.update_principal("p-1", password_hash=HASH, disabled=False)

    # Each change of the password or of ``disabled`` is a credential change: the
    # generation grows (test_credential_contract says what it orders).
    assert unchanged == make_principal()
    assert rehashed == replace(make_principal(), password_hash=OTHER_HASH, generation=1)
    assert disabled == replace(
        make_principal(), password_hash=OTHER_HASH, disabled=True, generation=2
    )
    assert both == replace(make_principal(), generation=3)
    assert await store.get_principal("p-1") == replace(make_principal(), generation=3)
    assert await store.update_principal("p-404", disabled=True) is None
    assert await store.get_principal("p-404") is None


async def test_delete_principal_frees_the_name(store: Store) -> None:
    await store.create_principal(make_principal("alice", "p-1"))
    await store.create_principal(make_principal("bob", "p-2"))

    assert await store.delete_principal("p-1") is True
    assert await store.delete_principal("p-1") is False
    assert await store.delete_principal("p-404") is False

    assert await store.get_principal("p-1") is None
    assert await store.get_principal_by_name("alice") is None
    assert await store.get_principal("p-2") == make_principal("bob", "p-2")
    await store.create_principal(make_principal("alice", "p-3"))  # the name is free again
