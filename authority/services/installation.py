"""Opening an installation: its database, its KEK and its admin credential, safely.

What may be created, and when:

- The embedded default generates ``kek`` and ``admin-token`` into the data directory on
  first start, so ``authority serve`` works out of the box. It never generates either
  once the database holds signing keys: a missing secret next to an existing database
  is an operator's mistake (a lost file, a volume not mounted), and a new KEK would
  only seal keys that nothing else can open.
- A SQLite database that is missing (or zero bytes long) next to an installation's
  ``kek`` or ``admin-token`` file is refused: starting afresh there would silently drop
  every account. ``--init`` (AUTHORITY_ALLOW_FRESH_INSTALL) permits it, explicitly.
- Before anything is written, the KEK ring must open every stored envelope (signing
  keys and webhook secrets, see ``authority.keys.kek_check``).
- On SQLite, processes opening one data directory at once (``serve --workers N`` on a
  first start) take turns (an advisory lock on ``.install.lock``): otherwise one saw the
  database its sibling had just created, still empty, or the KEK it had just generated
  with no database yet, and refused to start as if an installation had been lost.
  (PostgreSQL needs no turn here, and its data directory may be read-only.)

Messages name files and KEK ids, never secret material.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from authority.config import Settings
from authority.crypto import Kek, KekRing, load_kek
from authority.crypto.kek_source import GENERATED_FILE_NAME, load_previous_keks
from authority.domain.errors import AuthorityError
from authority.keys.kek_check import prove_keys, prove_webhooks, sealing_kek_ids
from authority.keys.manager import private_key_aad
from authority.services.admin_credential import ADMIN_TOKEN_FILENAME, load_admin_secret
from authority.services.webhooks import webhook_secret_aad
from authority.store.base import Store

FRESH_INSTALL_HINT = (
    "start once with `authority serve --init` (or AUTHORITY_ALLOW_FRESH_INSTALL=1) to "
    "create a new, empty installation"
)


class InstallationRefused(AuthorityError):
    """Starting would lose or corrupt an existing installation; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Installation:
    kek: KekRing
    admin_secret: str


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def refuse_lost_database(settings: Settings) -> None:
    """On SQLite: refuse a missing or empty database file where a previous installation
    left its KEK or admin token, unless a fresh install was asked for."""
    if settings.database_url or settings.allow_fresh_install:
        return
    database = settings.database_path
    size = _size(database)
    if size:
        return
    leftovers = [
        name
        for name in (GENERATED_FILE_NAME, ADMIN_TOKEN_FILENAME)
        if (settings.data_dir / name).exists()
    ]
    state = "is missing" if size is None else "is empty (0 bytes)"
    if size == 0:
        # Never a state we leave behind: SQLite writes its header with the schema.
        raise InstallationRefused(
            f"the database {database} {state}: refusing to start a new installation over "
            f"it (restore it from a backup, or {FRESH_INSTALL_HINT})"
        )
    if leftovers:
        raise InstallationRefused(
            f"the database {database} {state}, but {settings.data_dir} holds an "
            f"installation's {' and '.join(leftovers)}: refusing to start a new, empty "
            f"installation (every account would be gone). Restore the database, or "
            f"{FRESH_INSTALL_HINT}"
        )


def _configured_kek(settings: Settings) -> Kek | None:
    """The KEK from its configured source or the generated file; None if it would be
    generated now."""
    generated = settings.data_dir / GENERATED_FILE_NAME
    if settings.kek is None and settings.kek_file is None and not generated.exists():
        return None
    return load_kek(env_value=settings.kek, file=settings.kek_file, generate_into=settings.data_dir)


def _configured_admin_secret(settings: Settings) -> str | None:
    generated = settings.data_dir / ADMIN_TOKEN_FILENAME
    if not (settings.admin_token or settings.admin_token_file or generated.exists()):
        return None
    return load_admin_secret(
        env_value=settings.admin_token,
        file=settings.admin_token_file,
        generate_into=settings.data_dir,
    )


INSTALL_LOCK_NAME = ".install.lock"


def _lock_exclusively(data_dir: Path) -> int:
    """The descriptor of ``data_dir``'s install lock, once this process holds it."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(data_dir / INSTALL_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def _installation_lock(settings: Settings) -> AsyncIterator[None]:
    """On SQLite, exclusive among processes opening the data directory; released when
    the installation is open (the database has its schema, the generated secrets exist)."""
    if settings.database_url:
        yield
        return
    fd = await asyncio.to_thread(_lock_exclusively, settings.data_dir)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


async def open_installation(settings: Settings, store: Store) -> Installation:
    """Open ``store`` and the secrets that go with it; see the module docstring.

    Raises InstallationRefused or KekMismatch (with nothing written) when the pieces do
    not belong together.
    """
    async with _installation_lock(settings):
        return await _open_installation(settings, store)


async def _open_installation(settings: Settings, store: Store) -> Installation:
    refuse_lost_database(settings)
    kek = _configured_kek(settings)
    admin_secret = _configured_admin_secret(settings)
    previous = load_previous_keks(env_value=settings.kek_previous, file=settings.kek_previous_file)
    await store.open()
    keys = await store.list_keys()
    webhooks = await store.list_webhooks()
    existing = bool(keys or webhooks)
    if existing and kek is None:
        raise InstallationRefused(
            f"the database holds signing keys sealed with KEK id(s) {sealing_kek_ids(keys)!r} "
            f"but no KEK is configured and {settings.data_dir / GENERATED_FILE_NAME} does not "
            "exist: set AUTHORITY_KEK or AUTHORITY_KEK_FILE to that KEK, or restore the file. "
            "No KEK was generated and nothing was written"
        )
    if existing and admin_secret is None:
        raise InstallationRefused(
            "the database holds signing keys but no admin credential is configured and "
            f"{settings.data_dir / ADMIN_TOKEN_FILENAME} does not exist: set "
            "AUTHORITY_ADMIN_TOKEN or AUTHORITY_ADMIN_TOKEN_FILE, or restore the file. "
            "No credential was generated and nothing was written"
        )
    # A new installation: generate what is missing (racing processes share one file).
    if kek is None:
        kek = load_kek(env_value=None, file=None, generate_into=settings.data_dir)
    if admin_secret is None:
        admin_secret = load_admin_secret(env_value=None, file=None, generate_into=settings.data_dir)
    ring = KekRing(kek, previous)
    prove_keys(ring, keys, aad=private_key_aad)
    prove_webhooks(ring, webhooks, aad=webhook_secret_aad)
    return Installation(kek=ring, admin_secret=admin_secret)
