"""The store's half of "client changes are ordered with the tokens minted for them".

``change_client`` raises the client's generation and, when it revokes, records a
not-before that covers every token committed for the client before it (whatever clock
minted it); ``record_issued`` and ``create_session(..., client_generation=...)`` commit
only while the client is enabled and at the generation read. The race below runs them
concurrently on real connections (a pool on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from authority.domain.events import new_event
from authority.domain.revocation import Revocation, RevocationKind
from authority.store.base import IssuedToken, Store

from .builders import T0, epoch, make_client, make_principal, make_refresh, make_session

HORIZON = timedelta(hours=1)


def _issued(client_id: str, generation: int, iat: float, n: int = 0) -> IssuedToken:
    event = new_event("token.issued", "token", f"j-{client_id}-{n}", at=T0, data={"n": n})
    return IssuedToken(event, client_id, generation, iat)


async def test_a_change_raises_the_generation_and_a_revocation_is_recorded(store: Store) -> None:
    await store.create_client(make_client("svc"))
    assert (await store.get_client("svc")).generation == 0  # type: ignore[union-attr]

    enabled = await store.change_client("svc", at=T0, disabled=False)
    assert enabled.client is not None and enabled.client.generation == 1
    assert enabled.revocation is None

    revoked = await store.change_client("svc", at=T0, disabled=True, revoke_for=HORIZON)
    assert revoked.client is not None
    assert revoked.client.generation == 2 and revoked.client.disabled
    assert revoked.revocation == Revocation(
        RevocationKind.CLIENT, "svc", epoch(T0), epoch(T0) + HORIZON.total_seconds()
    )
    stored = await store.get_client("svc")
    assert stored == revoked.client
    assert stored is not None and stored.changed_at == T0
    assert revoked.revocation in await store.list_revocations(epoch(T0))

    deleted = await store.change_client("svc", at=T0, delete=True, revoke_for=HORIZON)
    assert deleted.client is not None
    assert await store.get_client("svc") is None
    unknown = await store.change_client("svc", at=T0, disabled=True)
    assert unknown == type(unknown)(None, None)


async def test_tokens_commit_only_under_the_generation_read(store: Store) -> None:
    await store.create_client(make_client("svc"))
    await store.create_client(make_client("other"))
    iat = epoch(T0)
    assert await store.record_issued(
        [_issued("svc", 0, iat, 1), _issued("other", 0, iat, 2), _issued("svc", 5, iat, 3)]
    ) == [True, True, False]

    await store.change_client("svc", at=T0, secret_hash=b"x" * 32, revoke_for=HORIZON)
    assert await store.record_issued([_issued("svc", 0, iat, 4), _issued("svc", 1, iat, 5)]) == [
        False,
        True,
    ]
    await store.change_client("svc", at=T0, disabled=True)
    assert await store.record_issued([_issued("svc", 2, iat, 6)]) == [False]
    await store.change_client("other", at=T0, delete=True)
    assert await store.record_issued([_issued("other", 0, iat, 7)]) == [False]
    ids = {e.event.aggregate_id for e in await store.read_outbox()}
    assert {"j-svc-1", "j-other-2", "j-svc-5"} <= ids
    assert not {"j-svc-3", "j-svc-4", "j-svc-6", "j-other-7"} & ids


async def test_a_revocation_covers_tokens_minted_by_a_clock_ahead(store: Store) -> None:
    """A token committed with an `iat` later than the change's clock is still covered."""
    await store.create_client(make_client("svc"))
    ahead = epoch(T0) + 7.25
    assert await store.record_issued([_issued("svc", 0, ahead)]) == [True]
    change = await store.change_client("svc", at=T0, disabled=True, revoke_for=HORIZON)
    assert change.revocation is not None
    assert change.revocation.issued_before > ahead
    assert change.client is not None and change.client.changed_at is not None
    assert change.client.changed_at.timestamp() == change.revocation.issued_before

    # The same for a session of the client that the change ends.
    await store.create_client(make_client("web"))
    await store.create_principal(make_principal())
    later = T0 + timedelta(seconds=9)
    session = make_session("s-web", client_id="web")
    assert await store.create_session(
        session, make_refresh("w", "s-web", issued_at=later), generation=0, client_generation=0
    )
    ended = await store.change_client("web", at=T0, disabled=True, revoke_for=HORIZON)
    assert ended.revocation is not None
    assert ended.revocation.issued_before > epoch(later)


async def test_a_session_is_stored_only_under_the_client_generation(store: Store) -> None:
    await store.create_principal(make_principal())
    await store.create_client(make_client("mobile"))
    assert await store.create_session(
        make_session("s-1"), make_refresh("a", "s-1"), generation=0, client_generation=0
    )
    await store.change_client("mobile", at=T0, secret_hash=b"y" * 32, revoke_for=HORIZON)
    assert not await store.create_session(
        make_session("s-2"), make_refresh("b", "s-2"), generation=0, client_generation=0
    )
    assert await store.find_refresh(make_refresh("b", "s-2").token_hash) is None
    found = await store.find_refresh(make_refresh("a", "s-1").token_hash)
    assert found is not None and found[1].revoked_at is not None  # ended by the rotation


async def test_concurrent_token_writes_and_a_disable_are_ordered(store: Store) -> None:
    """Every write either committed before the disable (and is covered by its revocation)
    or was refused; none commits after it."""
    await store.create_client(make_client("svc"))
    iat = epoch(T0) + 3.0  # minted by a replica whose clock runs ahead

    async def writer(n: int) -> bool:
        (ok,) = await store.record_issued([_issued("svc", 0, iat, n)])
        return ok

    writes = [asyncio.create_task(writer(n)) for n in range(30)]
    await asyncio.sleep(0)
    change = await store.change_client("svc", at=T0, disabled=True, revoke_for=HORIZON)
    results = await asyncio.gather(*writes)
    assert change.revocation is not None
    committed = {e.event.aggregate_id for e in await store.read_outbox()}
    for n, ok in enumerate(results):
        assert ok == (f"j-svc-{n}" in committed)
    if any(results):
        assert change.revocation.issued_before > iat
    assert await store.record_issued([_issued("svc", 0, iat, 99)]) == [False]
