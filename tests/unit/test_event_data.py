"""An event's data is encoded once, when it is made: the stored form is the one encoding
the data on demand gives, and secrets or non-JSON are still refused."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authority.domain.events import new_event, new_event_id

_AT = datetime(2026, 1, 1, tzinfo=UTC)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(data=st.dictionaries(st.sampled_from(["a", "b", "scope", "zz", "é"]), _VALUES))
def test_the_stored_form_is_the_on_demand_encoding(data: dict[str, Any]) -> None:
    event = new_event("t.x", "token", "t1", at=_AT, data=data)
    expected = json.dumps(dict(event.data), sort_keys=True, separators=(",", ":"))
    assert event.data_json() == expected
    assert replace(event, data_text="").data_json() == expected
    assert event == replace(event, data_text="")  # not part of the event's identity


@pytest.mark.parametrize(
    "data", [{"secret": "s"}, {"x": math.nan}, {"x": math.inf}, {"x": object()}, {"x": {1, 2}}]
)
def test_secrets_and_non_json_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        new_event("t.x", "token", "t1", at=_AT, data=data)


def test_event_ids_keep_their_form_and_sort_by_creation_time() -> None:
    """Time first (the millisecond), then 48 random bits: ids made close together share
    index pages in the outbox and the audit log, and none repeats."""
    earlier = [new_event_id() for _ in range(1000)]
    time.sleep(0.002)
    later = [new_event_id() for _ in range(1000)]
    for event_id in earlier + later:
        assert re.fullmatch(r"ev_[0-9a-f]{24}", event_id)
    assert max(earlier) < min(later)
    assert len(set(earlier + later)) == 2000
    now_ms = time.time_ns() // 1_000_000
    assert abs(int(later[-1][3:15], 16) - now_ms) < 60_000
