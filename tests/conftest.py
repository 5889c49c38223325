"""Suite-wide rules: a test that starts a server process must be marked ``integration``;
Hypothesis judges examples, never their speed."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests import processes

# Hypothesis's default 200 ms deadline per example is a timing assertion: on a loaded
# machine an ICU call or a first import exceeded it once (test_canonical_names). The
# properties are about answers; a slow example is not a failure.
settings.register_profile("authority", deadline=None)
settings.load_profile("authority")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    processes.running_test_is_integration(item.get_closest_marker("integration") is not None)
