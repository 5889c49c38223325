"""Connection caps derived from the descriptor limit (authority/connection_limits.py)."""

from __future__ import annotations

import pytest

from authority.config import ConfigError, Settings
from authority.connection_limits import derive_caps, headroom


@pytest.mark.parametrize("fd_limit", [256, 512, 1024, 4096, 65536, 1 << 20])
def test_the_caps_leave_the_headroom_free(fd_limit: int) -> None:
    caps = derive_caps(fd_limit)
    assert caps.total <= fd_limit - headroom(fd_limit)
    assert headroom(fd_limit) >= 128
    assert caps.grpc > caps.http > caps.admin > caps.metrics > 0


def test_512_descriptors_give_192_grpc_and_96_http_connections() -> None:
    caps = derive_caps(512)
    assert (caps.grpc, caps.http, caps.admin, caps.metrics) == (192, 96, 48, 24)


def test_explicit_caps_override_and_may_not_eat_the_headroom() -> None:
    assert derive_caps(1024, grpc=10, http=20).grpc == 10
    with pytest.raises(ValueError, match="AUTHORITY_GRPC_MAX_CONNECTIONS"):
        derive_caps(512, grpc=400)


def test_timeouts_and_caps_are_validated() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(
            {
                "AUTHORITY_HEADER_TIMEOUT": "0s",
                "AUTHORITY_IDLE_TIMEOUT": "0s",
                "AUTHORITY_METRICS_ADDRESS": "nowhere",
            }
        )
    message = str(caught.value)
    assert "AUTHORITY_HEADER_TIMEOUT must be positive" in message
    assert "AUTHORITY_IDLE_TIMEOUT must be positive" in message
    assert "AUTHORITY_METRICS_ADDRESS" in message
    with pytest.raises(ConfigError, match="AUTHORITY_HTTP_MAX_CONNECTIONS"):
        Settings.load({"AUTHORITY_HTTP_MAX_CONNECTIONS": "-1"})
