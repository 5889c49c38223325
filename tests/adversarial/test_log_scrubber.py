"""The log scrubber redacts secrets, not words: the documented warnings reach the log as
written, against a real server (its real logging configuration)."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.server import ADMIN_TOKEN, ServerProcess


def test_the_short_prepublish_warning_is_logged_verbatim(
    start_server: Callable[..., ServerProcess],
) -> None:
    """deploy/envoy/README.md tells operators to look for ``config.short_prepublish``."""
    server = start_server(AUTHORITY_KEY_PREPUBLISH="1m", AUTHORITY_JWKS_MAX_AGE="30s")
    with server.client() as client:
        client.create_principal("alice", "correct horse battery staple 42")
    assert server.terminate() == 0
    warnings = [e for e in server.events() if e.get("level") == "warning"]
    assert "config.short_prepublish" in [e["event"] for e in warnings], warnings
    output = "\n".join(server.lines)
    assert "short_[REDACTED" not in output
    assert ADMIN_TOKEN not in output  # and redaction still works on the same run
