"""Connection settings: the DSN without its password, identifiers and advisory-lock keys."""

from __future__ import annotations

import contextlib
import hashlib
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (in the authority or in a ``password=`` parameter),
    for messages and logs. A DSN that does not parse is replaced as a whole."""
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        query = "&".join(
            f"{name}=***" if name.lower() == "password" else f"{name}={value}"
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<a malformed database URL>"


def dsn_secrets(dsn: str) -> tuple[str, ...]:
    """Every form in which the DSN's password could appear in a driver message."""
    secrets = {dsn}
    with contextlib.suppress(ValueError):
        parts = urlsplit(dsn)
        if parts.password:
            secrets |= {parts.password, unquote(parts.password)}
        secrets |= {
            value
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
            if name.lower() == "password" and value
        }
    return tuple(sorted((s for s in secrets if s), key=len, reverse=True))


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def advisory_key(purpose: str, schema: str) -> int:
    """A fixed 64-bit advisory-lock key per purpose and schema, the same in every process
    (advisory locks are per database, and several stores may share one database)."""
    digest = hashlib.sha256(f"authority:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
