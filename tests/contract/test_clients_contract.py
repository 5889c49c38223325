"""The clients facet of the store contract."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from authority.domain.clients import GrantType
from authority.domain.errors import AlreadyExists
from authority.store.base import Store

from .builders import SECRET_HASH, digest, is_utc_aware, make_client


async def test_clients_round_trip_exactly(store: Store) -> None:
    confidential = make_client("mobile")
    public = make_client(
        "spa",
        secret_hash=b"",
        grant_types=frozenset({GrantType.PASSWORD}),
        scopes=frozenset(),
        default_scopes=(),
        disabled=True,
        created_at=datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    )
    await store.create_client(confidential)
    await store.create_client(public)

    stored = await store.get_client("mobile")
    assert stored == confidential
    assert stored is not None
    assert stored.audiences == ("api", "billing", "a-first")  # order kept
    assert stored.default_scopes == ("write", "read")
    assert all(isinstance(g, GrantType) for g in stored.grant_types)
    assert await store.get_client("spa") == public
    for client in (stored, await store.get_client("spa")):
        assert client is not None
        assert is_utc_aware(client.created_at)
    assert await store.get_client("nobody") is None


async def test_a_taken_client_id_is_refused_without_revealing_the_secret(store: Store) -> None:
    await store.create_client(make_client("mobile"))

    with pytest.raises(AlreadyExists) as caught:
        await store.create_client(make_client("mobile", audiences=("other",)))

    assert "mobile" in caught.value.message
    assert SECRET_HASH.hex() not in caught.value.message
    assert await store.get_client("mobile") == make_client("mobile")


async def test_update_and_delete_client(store: Store) -> None:
    await store.create_client(make_client("mobile"))
    new_hash = digest("rotated secret")

    assert await store.update_client("mobile") == make_client("mobile")
    assert await store.update_client("mobile", secret_hash=new_hash) == make_client(
        "mobile", secret_hash=new_hash
    )
    assert await store.update_client("mobile", disabled=True) == make_client(
        "mobile", secret_hash=new_hash, disabled=True
    )
    assert await store.update_client("nobody", disabled=True) is None

    assert await store.delete_client("mobile") is True
    assert await store.delete_client("mobile") is False
    assert await store.get_client("mobile") is None
