"""Suite-wide rules: a test that starts a server process must be marked ``integration``."""

from __future__ import annotations

import pytest

from tests import processes


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    processes.running_test_is_integration(item.get_closest_marker("integration") is not None)
