"""Where the KEK comes from: an environment variable, a mounted secret file, or a generated file.

Production sets ``AUTHORITY_KEK`` or ``AUTHORITY_KEK_FILE``; the embedded default
generates one into the data directory on first start so ``authority serve`` works
out of the box. Error messages name the source but never echo its contents.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
from pathlib import Path

from authority.crypto.envelope import KEK_BYTES, Kek
from authority.domain.errors import InvalidArgument

ENV_VAR = "AUTHORITY_KEK"
FILE_ENV_VAR = "AUTHORITY_KEK_FILE"
PREVIOUS_ENV_VAR = "AUTHORITY_KEK_PREVIOUS"
PREVIOUS_FILE_ENV_VAR = "AUTHORITY_KEK_PREVIOUS_FILE"
GENERATED_FILE_NAME = "kek"
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
# A KEK file is 44 characters plus a newline; anything much larger is not a KEK.
_MAX_FILE_BYTES = 4096


def load_kek(*, env_value: str | None, file: Path | None, generate_into: Path | None) -> Kek:
    """The KEK from exactly one configured source, else from (or into) ``generate_into/kek``."""
    if env_value is not None and file is not None:
        raise InvalidArgument(f"set {ENV_VAR} or {FILE_ENV_VAR}, not both")
    if env_value is not None:
        return Kek.from_secret(_decode_text(env_value, ENV_VAR))
    if file is not None:
        return Kek.from_secret(_decode_file(_read_file(file), file))
    if generate_into is not None:
        return _load_or_generate(generate_into)
    raise InvalidArgument(
        f"no key-encryption key: set {ENV_VAR} to base64 of {KEK_BYTES} random bytes "
        f"(e.g. `openssl rand -base64 {KEK_BYTES}`), or {FILE_ENV_VAR} to a file holding it"
    )


def load_previous_keks(*, env_value: str | None, file: Path | None) -> tuple[Kek, ...]:
    """The older KEKs a server still accepts for opening, during a KEK rotation.

    A comma-separated list in the same encodings as ``AUTHORITY_KEK`` (whitespace and
    newlines separate too, so a file may hold one per line; a file of exactly 32 bytes
    is one raw KEK). Empty means none, so a deployment can drop them by blanking the
    variable. Errors name the entry by position, never its contents.
    """
    if env_value is not None and file is not None:
        raise InvalidArgument(f"set {PREVIOUS_ENV_VAR} or {PREVIOUS_FILE_ENV_VAR}, not both")
    if file is not None:
        data = _read_file(file)
        if len(data) == KEK_BYTES:
            return (Kek.from_secret(data),)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"KEK file {file} must hold base64 KEKs separated by commas or newlines, "
                f"or exactly {KEK_BYTES} raw bytes"
            ) from None
        source = f"KEK file {file}"
    elif env_value is not None:
        text, source = env_value, PREVIOUS_ENV_VAR
    else:
        return ()
    entries = [entry for entry in re.split(r"[,\s]+", text) if entry]
    return tuple(
        Kek.from_secret(_decode_text(entry, f"{source} (entry {number})"))
        for number, entry in enumerate(entries, start=1)
    )


def _decode_text(text: str, source: str) -> bytes:
    """base64url or standard base64 of exactly 32 bytes, padding optional."""
    value = text.strip()
    if not value:
        raise InvalidArgument(f"{source} is empty; it must be base64 of {KEK_BYTES} bytes")
    if not _BASE64_TEXT.fullmatch(value):
        raise InvalidArgument(f"{source} is not base64 (of {KEK_BYTES} bytes)")
    unpadded = value.rstrip("=").replace("-", "+").replace("_", "/")
    if len(unpadded) % 4 == 1:
        raise InvalidArgument(f"{source} is not base64 (of {KEK_BYTES} bytes)")
    try:
        secret = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{source} is not base64 (of {KEK_BYTES} bytes)") from None
    if len(secret) != KEK_BYTES:
        raise InvalidArgument(
            f"{source} must hold exactly {KEK_BYTES} bytes (base64-encoded), not {len(secret)}"
        )
    return secret


def _decode_file(data: bytes, path: Path) -> bytes:
    """Exactly 32 raw bytes, or base64 text (32 raw bytes can never be base64 of 32 bytes)."""
    if len(data) == KEK_BYTES:
        return data
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"KEK file {path} must hold base64 of {KEK_BYTES} bytes, "
            f"or exactly {KEK_BYTES} raw bytes"
        ) from None
    return _decode_text(text, f"KEK file {path}")


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"cannot read KEK file {path}: {_reason(exc)}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise InvalidArgument(f"KEK file {path} is too large to be a KEK")
    return data


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _load_or_generate(directory: Path) -> Kek:
    """Reuse ``directory/kek``, or create it once with a fresh secret, readable by us alone."""
    path = directory / GENERATED_FILE_NAME
    existing = _read_private_file(path)
    if existing is not None:
        return Kek.from_secret(_decode_file(existing, path))
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"cannot create KEK directory {directory}: {_reason(exc)}") from None
    secret = os.urandom(KEK_BYTES)
    text = base64.urlsafe_b64encode(secret).rstrip(b"=") + b"\n"
    if not _publish_exclusively(path, text):
        # Another process created it first: everyone must use that one.
        existing = _read_private_file(path)
        if existing is None:
            raise InvalidArgument(f"KEK file {path} vanished while it was being created")
        return Kek.from_secret(_decode_file(existing, path))
    return Kek.from_secret(secret)


def _read_private_file(path: Path) -> bytes | None:
    """The file's bytes, None if absent; refuses files others may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read KEK file {path}: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgument(f"KEK file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise InvalidArgument(
                f"KEK file {path} has permissions {mode:04o}, wider than 0600; "
                f"run `chmod 600 {path}`"
            )
        data = handle.read(_MAX_FILE_BYTES + 1)
    if len(data) > _MAX_FILE_BYTES:
        raise InvalidArgument(f"KEK file {path} is too large to be a KEK")
    return data


def _publish_exclusively(path: Path, content: bytes) -> bool:
    """Create ``path`` with ``content`` (mode 0600) unless it exists; False if someone beat us.

    The content is written and fsynced in a private temporary file that is then
    hard-linked into place, so no reader ever sees a partial KEK and an existing
    KEK is never overwritten. Without hard links, fall back to O_EXCL in place.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    _write_new(tmp, content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        try:
            _write_new(path, content)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_directory(path.parent)
    return True


def _write_new(path: Path, content: bytes) -> None:
    """Write a file that must not exist yet, mode 0600, durably. FileExistsError if it does."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:
        raise InvalidArgument(f"cannot create KEK file {path}: {_reason(exc)}") from None
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise InvalidArgument(f"cannot write KEK file {path}: {_reason(exc)}") from None
    os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
