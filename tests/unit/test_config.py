"""Configuration is validated once, at start, with every problem named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from authority.config import ConfigError, Settings, parse_duration
from authority.domain.keys import Algorithm


def test_defaults_are_safe_and_consistent() -> None:
    settings = Settings.load({})
    assert settings.grpc_address == "127.0.0.1:50051"
    assert settings.http_address == "127.0.0.1:8080"
    assert settings.algorithm is Algorithm.EDDSA
    assert settings.key_prepublish >= timedelta(minutes=15)
    assert settings.jwks_max_age <= settings.key_prepublish
    assert not settings.short_prepublish


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "authority.toml"
    config.write_text('audience = "from-file"\nalgorithm = "es256"\naccess_token_ttl = "5m"\n')
    settings = Settings.load(
        {"AUTHORITY_CONFIG_FILE": str(config), "AUTHORITY_AUDIENCE": "from-env"}
    )
    assert settings.audience == "from-env"
    assert settings.algorithm is Algorithm.ES256
    assert settings.access_token_ttl == timedelta(minutes=5)


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(
            {
                "AUTHORITY_ACCESS_TOKEN_TTL": "soon",
                "AUTHORITY_ALGORITHM": "HS256",
                "AUTHORITY_MAX_TOKEN_BYTES": "-1",
            }
        )
    message = str(caught.value)
    for name in ("ACCESS_TOKEN_TTL", "ALGORITHM", "MAX_TOKEN_BYTES"):
        assert f"AUTHORITY_{name}" in message


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="JWKS_MAX_AGE must not exceed"):
        Settings.load({"AUTHORITY_JWKS_MAX_AGE": "2h", "AUTHORITY_KEY_PREPUBLISH": "1h"})
    with pytest.raises(ConfigError, match="ROTATION_PERIOD must be longer"):
        Settings.load({"AUTHORITY_KEY_ROTATION_PERIOD": "30m"})
    with pytest.raises(ConfigError, match="not both"):
        Settings.load({"AUTHORITY_KEK": "a", "AUTHORITY_KEK_FILE": "/x"})
    with pytest.raises(ConfigError, match="LOCKOUT_BASE must be positive and at most"):
        Settings.load({"AUTHORITY_LOCKOUT_BASE": "20m"})  # beyond the 15m maximum
    with pytest.raises(ConfigError, match="LOCKOUT_BASE must be positive"):
        Settings.load({"AUTHORITY_LOCKOUT_BASE": "0s"})
    short = Settings.load({"AUTHORITY_KEY_PREPUBLISH": "5m", "AUTHORITY_JWKS_MAX_AGE": "1m"})
    assert short.short_prepublish  # allowed, but warned about at start


def test_unknown_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "authority.toml"
    config.write_text('audiense = "typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'audiense'"):
        Settings.load({"AUTHORITY_CONFIG_FILE": str(config)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("250ms", 0.25)],
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


def test_bad_durations_are_rejected() -> None:
    for text in ("", "1w", "-5s", "ten minutes"):
        with pytest.raises(ValueError):
            parse_duration(text)


def test_the_webhook_allow_list_takes_cidrs_addresses_and_names() -> None:
    settings = Settings.load(
        {"AUTHORITY_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, 127.0.0.1, ::1, hooks.internal."}
    )
    allowed = settings.webhook_allowed_networks
    assert [str(n) for n in allowed.networks] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert allowed.allows_host("HOOKS.internal")
    with pytest.raises(ConfigError, match="AUTHORITY_WEBHOOK_ALLOWED_NETWORKS: 'a b'"):
        Settings.load({"AUTHORITY_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, a b"})


def test_absurd_durations_are_refused_with_a_message_not_an_overflow() -> None:
    for name in ("AUTHORITY_SESSION_ABSOLUTE_TTL", "AUTHORITY_ACCESS_TOKEN_TTL"):
        with pytest.raises(ConfigError, match=f"{name}: '99999999999d' is longer than 3650d"):
            Settings.load({name: "99999999999d"})
    with pytest.raises(ConfigError, match="AUTHORITY_SESSION_ABSOLUTE_TTL must be at most"):
        Settings.load({}, session_absolute_ttl=timedelta(days=3651))
