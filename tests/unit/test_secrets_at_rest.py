"""The admin credential and password hashes: generated and compared safely, never in clear."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from authority.domain.errors import InvalidArgument, ResourceExhausted
from authority.services.admin_credential import (
    ADMIN_TOKEN_FILENAME,
    AdminCredential,
    load_admin_secret,
)
from authority.services.passwords import HashParameters, PasswordHasher

FAST = HashParameters(time_cost=1, memory_kib=1024, parallelism=1)


def test_generated_admin_token_is_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_admin_secret(env_value=None, file=None, generate_into=data)
    path = data / ADMIN_TOKEN_FILENAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
    assert len(first) >= 40
    assert load_admin_secret(env_value=None, file=None, generate_into=data) == first


def test_a_generated_admin_token_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_admin_secret(env_value=None, file=None, generate_into=tmp_path)
    os.chmod(tmp_path / ADMIN_TOKEN_FILENAME, 0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        load_admin_secret(env_value=None, file=None, generate_into=tmp_path)


def test_admin_token_sources(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("adm_" + "s" * 40 + "\n")
    assert (
        load_admin_secret(env_value=None, file=secret_file, generate_into=None) == "adm_" + "s" * 40
    )
    with pytest.raises(InvalidArgument, match="not both"):
        load_admin_secret(env_value="x" * 40, file=secret_file, generate_into=None)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_admin_secret(env_value=None, file=tmp_path / "missing", generate_into=None)
    with pytest.raises(InvalidArgument, match="AUTHORITY_ADMIN_TOKEN"):
        load_admin_secret(env_value=None, file=None, generate_into=None)


def test_admin_credential_matches_only_the_exact_secret() -> None:
    credential = AdminCredential("adm_" + "k" * 40)
    assert credential.matches("adm_" + "k" * 40)
    assert not credential.matches("adm_" + "k" * 39)
    assert not credential.matches("")
    assert not credential.matches("\udcff")  # lone surrogates do not crash the comparison
    with pytest.raises(InvalidArgument):
        AdminCredential("too-short")


async def test_password_hashes_are_argon2id_and_verify() -> None:
    hasher = PasswordHasher(FAST, workers=1)
    try:
        encoded = await hasher.hash("correct horse battery staple")
        assert encoded.startswith("$argon2id$")
        assert "correct horse" not in encoded
        assert (await hasher.verify(encoded, "correct horse battery staple")).ok
        assert not (await hasher.verify(encoded, "wrong")).ok
        assert not (await hasher.verify(None, "anything")).ok  # unknown principal
        assert not (await hasher.verify("not a hash", "anything")).ok
    finally:
        hasher.close()


async def test_a_hash_made_with_old_parameters_asks_for_a_rehash() -> None:
    old = PasswordHasher(FAST, workers=1)
    new = PasswordHasher(HashParameters(time_cost=2, memory_kib=2048, parallelism=1), workers=1)
    try:
        encoded = await old.hash("correct horse battery staple")
        check = await new.verify(encoded, "correct horse battery staple")
        assert check.ok and check.needs_rehash
        assert not (await old.verify(encoded, "correct horse battery staple")).needs_rehash
    finally:
        old.close()
        new.close()


async def test_the_hashing_queue_is_bounded() -> None:
    hasher = PasswordHasher(FAST, workers=1, max_pending=3)
    try:
        results = await asyncio.gather(
            *(hasher.hash("correct horse battery staple") for _ in range(10)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, ResourceExhausted)]
        assert len(refused) == 7
        assert all(isinstance(r, str) for r in results if r not in refused)
        assert await hasher.hash("the queue drained") != ""
    finally:
        hasher.close()
