"""The write-health wrapper: every call of a write is reported, the first and every later
one (the wrapper is built once per method and kept), and reads pass through."""

from __future__ import annotations

from typing import Any, cast

import pytest

from authority.domain.errors import Unavailable
from authority.domain.write_health import STORE, WriteHealth
from authority.store.base import Store
from authority.store.observed import observed


class _Store:
    def __init__(self) -> None:
        self.fail = False
        self.writes = 0

    async def append_events(self, events: Any) -> None:
        self.writes += 1
        if self.fail:
            raise Unavailable("disk full")

    async def get_client(self, client_id: str) -> str:
        return client_id


async def test_every_call_of_a_write_is_reported() -> None:
    inner, health = _Store(), WriteHealth(3)
    store = observed(cast(Store, inner), health)
    for _ in range(3):
        inner.fail = True
        for expected in (1, 2):
            with pytest.raises(Unavailable):
                await store.append_events(())
            assert health.consecutive(STORE) == expected
        inner.fail = False
        await store.append_events(())
        assert health.consecutive(STORE) == 0
    assert inner.writes == 9
    assert cast(object, await store.get_client("c")) == "c"
