"""Configuration: environment variables, optionally a TOML file, validated once at start.

Every setting has an environment variable ``AUTHORITY_<NAME>``; the same names in
lower case are accepted as keys of the file named by ``AUTHORITY_CONFIG_FILE``.
The environment wins over the file. All problems are reported together.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from authority.domain.bounds import MAX_DURATION_SECONDS, MAX_SESSION_TTL
from authority.domain.keys import Algorithm
from authority.domain.webhook_targets import PUBLIC_ONLY, AllowList, parse_allow_list

ENV_PREFIX = "AUTHORITY_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""


def parse_duration(text: str) -> timedelta:
    """'90', '90s', '15m', '1h', '7d', '250ms' -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 15m, 1h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:  # also keeps timedelta and datetime from overflowing
        raise ValueError(f"{text!r} is longer than {MAX_SESSION_TTL.days}d")
    return timedelta(seconds=seconds)


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); port 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port_text)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} must be 0 or a positive integer")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. Build with ``Settings.load()``; tests construct them directly."""

    database_url: str | None = None  # postgresql://...; unset: the embedded SQLite default
    redis_url: str | None = None  # redis://...; unset: in-process limits and no fan-out
    redis_prefix: str = "authority"  # key and channel prefix: one per deployment sharing a Redis
    grpc_address: str = "127.0.0.1:50051"
    http_address: str = "127.0.0.1:8080"
    data_dir: Path = Path(".authority")
    issuer: str = ""  # default: http://<http host>:<bound http port>
    audience: str = "default"
    algorithm: Algorithm = Algorithm.EDDSA
    access_token_ttl: timedelta = timedelta(minutes=10)
    key_rotation_period: timedelta = timedelta(days=14)
    key_prepublish: timedelta = timedelta(hours=1)
    jwks_max_age: timedelta = timedelta(minutes=10)
    leeway: timedelta = timedelta(seconds=30)
    key_check_interval: timedelta = timedelta(seconds=30)
    revocation_poll: timedelta = timedelta(seconds=1)
    watch_heartbeat: timedelta = timedelta(seconds=1)  # WatchRevocations, when nothing else is sent
    session_idle_ttl: timedelta = timedelta(days=7)
    session_absolute_ttl: timedelta = timedelta(days=30)
    refresh_grace: timedelta = timedelta(seconds=10)
    min_password_length: int = 8
    login_attempts_per_minute: int = 10
    source_attempts_per_minute: int = 60
    # Revoke by access or refresh token (no credential but the token), per source address.
    revoke_attempts_per_minute: int = 60
    lockout_threshold: int = 5
    lockout_base: timedelta = timedelta(seconds=1)  # the first lock; each further one doubles
    lockout_max: timedelta = timedelta(minutes=15)
    max_token_bytes: int = 8192
    verify_cache_size: int = 65536
    shutdown_grace: timedelta = timedelta(seconds=10)
    kek: str | None = None
    kek_file: Path | None = None
    # Older KEKs still accepted for opening (comma-separated) while `authority kek rotate` runs.
    kek_previous: str | None = None
    kek_previous_file: Path | None = None
    admin_token: str | None = None
    admin_token_file: Path | None = None
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    # Half the cores: logins then never take the CPU that Verify needs.
    hash_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    log_format: str = "json"
    log_level: str = "info"
    # uvloop where installed ("auto"), or insist on "uvloop", or asyncio's loop ("asyncio").
    event_loop: str = "auto"
    reflection: bool = True
    # The password grant (legacy, RFC 9700 section 2.4), over gRPC and HTTP alike.
    oauth_password_grant: bool = True
    reuse_port: bool = False  # set by the supervisor for its workers
    # Permit creating a new, empty SQLite database where an installation's KEK or admin
    # token already lies (`authority serve --init`); never wipes an existing database.
    allow_fresh_install: bool = False
    # Consecutive failed writes (store, key rotation tick, outbox relay) that turn
    # readiness to NOT_SERVING; the next successful write restores it.
    write_failure_threshold: int = 3
    tls_cert_file: Path | None = None  # PEM chain: TLS on the gRPC and HTTP listeners
    tls_key_file: Path | None = None
    admin_address: str | None = None  # a separate gRPC listener for the admin RPCs
    tls_client_ca_file: Path | None = None  # clients of the admin listener need a cert from it
    # Prometheus /metrics on its own HTTP listener (then not on http_address).
    metrics_address: str | None = None
    # What one peer may hold (authority/connection_limits.py, authority/http_guard.py).
    header_timeout: timedelta = timedelta(seconds=10)  # HTTP headers; gRPC preface+SETTINGS
    idle_timeout: timedelta = timedelta(seconds=60)  # no request/RPC in flight
    max_connection_age: timedelta = timedelta(minutes=30)  # gRPC: then GOAWAY
    max_connection_age_grace: timedelta = timedelta(minutes=1)  # for streams still open
    grpc_max_connections: int = 0  # per gRPC listener; 0: derived from RLIMIT_NOFILE
    http_max_connections: int = 0  # HTTP listener; 0: derived from RLIMIT_NOFILE
    # Internal networks (CIDRs) and host names webhooks may be delivered to; by default only
    # public addresses are (no loopback, private, link-local or metadata destinations).
    webhook_allowed_networks: AllowList = PUBLIC_ONLY

    @property
    def short_prepublish(self) -> bool:
        """True when a key may sign before a verifier with a 10-minute JWKS cache (Envoy's
        default) has refetched: allowed, for tests and verifiers without caches, but warned."""
        return self.key_prepublish < timedelta(minutes=15)

    @property
    def http_scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"

    @property
    def production(self) -> bool:
        """PostgreSQL and Redis: several replicas and workers share state."""
        return bool(self.database_url)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "authority.db"

    def validate(self) -> None:
        """Raise ConfigError listing every inconsistency between settings."""
        problems: list[str] = []
        problems.extend(self._listener_problems())
        if self.jwks_max_age > self.key_prepublish:
            problems.append(
                "AUTHORITY_JWKS_MAX_AGE must not exceed AUTHORITY_KEY_PREPUBLISH, or a verifier "
                "could meet a key that started signing before its cached JWKS listed it"
            )
        if self.key_rotation_period <= self.key_prepublish:
            problems.append(
                "AUTHORITY_KEY_ROTATION_PERIOD must be longer than AUTHORITY_KEY_PREPUBLISH"
            )
        if not timedelta(0) < self.session_idle_ttl <= self.session_absolute_ttl:
            problems.append(
                "AUTHORITY_SESSION_IDLE_TTL must be positive and at most"
                " AUTHORITY_SESSION_ABSOLUTE_TTL"
            )
        if self.session_absolute_ttl > MAX_SESSION_TTL:
            problems.append(
                f"AUTHORITY_SESSION_ABSOLUTE_TTL must be at most {MAX_SESSION_TTL.days}d"
            )
        if not timedelta(0) <= self.refresh_grace <= timedelta(minutes=5):
            problems.append("AUTHORITY_REFRESH_GRACE must be between 0 and 5m")
        if self.access_token_ttl <= timedelta(0):
            problems.append("AUTHORITY_ACCESS_TOKEN_TTL must be positive")
        if not timedelta(0) < self.lockout_base <= self.lockout_max:
            problems.append(
                "AUTHORITY_LOCKOUT_BASE must be positive and at most AUTHORITY_LOCKOUT_MAX"
            )
        if self.watch_heartbeat <= timedelta(0):
            problems.append("AUTHORITY_WATCH_HEARTBEAT must be positive")
        if self.kek and self.kek_file:
            problems.append("set AUTHORITY_KEK or AUTHORITY_KEK_FILE, not both")
        if self.kek_previous and self.kek_previous_file:
            problems.append("set AUTHORITY_KEK_PREVIOUS or AUTHORITY_KEK_PREVIOUS_FILE, not both")
        if self.admin_token and self.admin_token_file:
            problems.append("set AUTHORITY_ADMIN_TOKEN or AUTHORITY_ADMIN_TOKEN_FILE, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append(
                "set both AUTHORITY_TLS_CERT_FILE and AUTHORITY_TLS_KEY_FILE, or neither"
            )
        if self.tls_client_ca_file is not None and not (self.admin_address and self.tls_cert_file):
            problems.append(
                "AUTHORITY_TLS_CLIENT_CA_FILE (mTLS) needs AUTHORITY_ADMIN_ADDRESS and"
                " AUTHORITY_TLS_CERT_FILE/_KEY_FILE"
            )
        if self.log_format not in {"json", "console"}:
            problems.append("AUTHORITY_LOG_FORMAT must be json or console")
        if self.log_level not in {"debug", "info", "warning", "error"}:
            problems.append("AUTHORITY_LOG_LEVEL must be debug, info, warning or error")
        if self.event_loop not in {"auto", "uvloop", "asyncio"}:
            problems.append("AUTHORITY_EVENT_LOOP must be auto, uvloop or asyncio")
        if not self.audience:
            problems.append("AUTHORITY_AUDIENCE must not be empty")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    def _listener_problems(self) -> list[str]:
        """Addresses, timeouts and connection caps of the listeners."""
        problems: list[str] = []
        for name in ("grpc_address", "http_address", "admin_address", "metrics_address"):
            if name in ("grpc_address", "http_address") or getattr(self, name):
                try:
                    parse_address(getattr(self, name))
                except ValueError as exc:
                    problems.append(f"AUTHORITY_{name.upper()}: {exc}")
        for name in ("header_timeout", "idle_timeout", "max_connection_age"):
            if getattr(self, name) <= timedelta(0):
                problems.append(f"AUTHORITY_{name.upper()} must be positive")
        if self.max_connection_age_grace < timedelta(0):
            problems.append("AUTHORITY_MAX_CONNECTION_AGE_GRACE must not be negative")
        for name in ("grpc_max_connections", "http_max_connections"):
            if getattr(self, name) < 0:
                problems.append(f"AUTHORITY_{name.upper()} must be 0 (derived) or positive")
        return problems

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the file (if any) and the environment, apply overrides, validate."""
        env = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        problems: list[str] = []
        config_file = env.get(ENV_PREFIX + "CONFIG_FILE")
        if config_file:
            try:
                with open(config_file, "rb") as handle:
                    document = tomllib.load(handle)
                raw.update({str(k).lower(): str(v) for k, v in document.items()})
            except (OSError, tomllib.TOMLDecodeError) as exc:
                problems.append(f"AUTHORITY_CONFIG_FILE {config_file}: {exc}")
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                problems.append(f"unknown setting {key!r} in {config_file}")
        for key, value in env.items():
            if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG_FILE":
                name = key[len(ENV_PREFIX) :].lower()
                if name in known:
                    raw[name] = value
        values: dict[str, Any] = {}
        for setting in fields(cls):
            if setting.name in overrides:
                values[setting.name] = overrides[setting.name]
            elif setting.name in raw:
                try:
                    values[setting.name] = _PARSERS[setting.name](raw[setting.name])
                except ValueError as exc:
                    problems.append(f"AUTHORITY_{setting.name.upper()}: {exc}")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        settings = cls(**values)
        settings.validate()
        return settings


def _algorithm(text: str) -> Algorithm:
    for algorithm in Algorithm:
        if text.strip().lower() == algorithm.value.lower():
            return algorithm
    raise ValueError(f"{text!r} is not one of {', '.join(a.value for a in Algorithm)}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return value

    return parse


def _text(text: str) -> str:
    return text


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        scheme = text.partition("://")[0].lower()
        if scheme not in schemes:
            # Never echo the URL: it may carry a password.
            raise ValueError(f"the URL scheme must be one of {', '.join(schemes)}")
        return text

    return parse


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _url("postgresql", "postgres"),
    "redis_url": _url("redis", "rediss", "unix"),
    "redis_prefix": _text,
    "grpc_address": _text,
    "http_address": _text,
    "data_dir": Path,
    "issuer": _text,
    "audience": _text,
    "algorithm": _algorithm,
    "access_token_ttl": parse_duration,
    "key_rotation_period": parse_duration,
    "key_prepublish": parse_duration,
    "jwks_max_age": parse_duration,
    "leeway": parse_duration,
    "key_check_interval": parse_duration,
    "revocation_poll": parse_duration,
    "watch_heartbeat": parse_duration,
    "session_idle_ttl": parse_duration,
    "session_absolute_ttl": parse_duration,
    "refresh_grace": parse_duration,
    "min_password_length": _positive_int,
    "login_attempts_per_minute": _positive_int,
    "source_attempts_per_minute": _positive_int,
    "revoke_attempts_per_minute": _positive_int,
    "lockout_threshold": _positive_int,
    "lockout_base": parse_duration,
    "lockout_max": parse_duration,
    "max_token_bytes": _positive_int,
    "verify_cache_size": _positive_int,
    "shutdown_grace": parse_duration,
    "kek": _text,
    "kek_file": Path,
    "kek_previous": _text,
    "kek_previous_file": Path,
    "admin_token": _text,
    "admin_token_file": Path,
    "argon2_time_cost": _positive_int,
    "argon2_memory_kib": _positive_int,
    "argon2_parallelism": _positive_int,
    "hash_workers": _positive_int,
    "log_format": _choice("json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "event_loop": _choice("auto", "uvloop", "asyncio"),
    "reflection": _bool,
    "oauth_password_grant": _bool,
    "reuse_port": _bool,
    "allow_fresh_install": _bool,
    "write_failure_threshold": _positive_int,
    "tls_cert_file": Path,
    "tls_key_file": Path,
    "admin_address": _text,
    "tls_client_ca_file": Path,
    "metrics_address": _text,
    "header_timeout": parse_duration,
    "idle_timeout": parse_duration,
    "max_connection_age": parse_duration,
    "max_connection_age_grace": parse_duration,
    "grpc_max_connections": _non_negative_int,
    "http_max_connections": _non_negative_int,
    "webhook_allowed_networks": parse_allow_list,
}
