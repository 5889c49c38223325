"""Every test that starts a server process is marked ``integration``, and this holds it.

``make unit`` runs ``-m "not integration"`` and promises no server processes: no
``authority serve``, no Envoy, no PostgreSQL or Redis of a test's own. The root
conftest records whether the running test is marked; every helper that starts such a
process calls :func:`check_may_start` first, so a test that forgets the marker fails
at once (under any selection) instead of quietly slowing ``make unit`` down.
"""

from __future__ import annotations

_marked_integration = True  # outside a pytest run (a script using the helpers): allowed


def running_test_is_integration(marked: bool) -> None:
    """Called by ``tests/conftest.py`` before each test's fixtures are set up."""
    global _marked_integration  # noqa: PLW0603 - one flag for the running test
    _marked_integration = marked


def check_may_start(what: str) -> None:
    if not _marked_integration:
        raise RuntimeError(
            f"this test starts {what} but is not marked integration: add "
            "`pytestmark = pytest.mark.integration` (or the decorator), so that "
            "`make unit` stays free of server processes"
        )
