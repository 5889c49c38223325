"""Fixtures for the adversarial suite: the same real server processes as tests/integration."""

from __future__ import annotations

import pytest

from tests.integration.conftest import server, start_server

__all__ = ["server", "start_server"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/adversarial" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
