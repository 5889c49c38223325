"""The admin credential: a bearer secret held by operators, compared as SHA-256 in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from authority.domain.errors import InvalidArgument

ADMIN_TOKEN_FILENAME = "admin-token"
_PREFIX = "adm_"


def new_admin_secret() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


class AdminCredential:
    """Only the digest is kept in memory; the secret itself is never logged or stored here."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise InvalidArgument("the admin token must have at least 32 characters")
        self._digest = hashlib.sha256(secret.encode()).digest()

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._digest)


def _read_generated_file(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InvalidArgument(
            f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
        )
    return path.read_text().strip()


def load_admin_secret(
    *, env_value: str | None, file: Path | None, generate_into: Path | None
) -> str:
    """From the environment, a secret file, or (embedded default) a generated 0600 file."""
    if env_value and file:
        raise InvalidArgument("set AUTHORITY_ADMIN_TOKEN or AUTHORITY_ADMIN_TOKEN_FILE, not both")
    if env_value:
        return env_value.strip()
    if file is not None:
        # An operator's file (a Kubernetes secret mounts 0644 by default) is not
        # permission-checked; the file we generate ourselves is.
        try:
            return file.read_text().strip()
        except FileNotFoundError as exc:
            raise InvalidArgument(f"AUTHORITY_ADMIN_TOKEN_FILE {file} does not exist") from exc
    if generate_into is None:
        raise InvalidArgument("set AUTHORITY_ADMIN_TOKEN or AUTHORITY_ADMIN_TOKEN_FILE")
    path = generate_into / ADMIN_TOKEN_FILENAME
    if path.exists():
        return _read_generated_file(path)
    generate_into.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = new_admin_secret()
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process won the race
        return _read_generated_file(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return secret
