"""The server is built without I/O, then run (``authority.runtime``).

``build_base`` and ``build`` only construct objects: given the installation's secrets
and the issuer, they wire every component without opening the store, binding a port or
needing an event loop. ``Authority`` has the same attributes before and after it has
run; what ``start`` builds is reached through ``components``, which says so when asked
too early."""

from __future__ import annotations

from pathlib import Path

import pytest

from authority.config import Settings
from authority.connection_limits import derive_caps
from authority.crypto.envelope import Kek, KekRing
from authority.domain.clock import SystemClock
from authority.runtime.build import build, build_base
from authority.runtime.runtime import Authority
from authority.services.installation import Installation

ADMIN_TOKEN = "an-admin-token-long-enough-for-any-check"


def _settings(data_dir: Path) -> Settings:
    settings = Settings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        kek=None,
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        argon2_parallelism=1,
    )
    settings.validate()
    return settings


def test_build_wires_every_component_with_no_io_and_no_event_loop(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-created"
    settings = _settings(data_dir)
    base = build_base(settings, SystemClock())
    components = build(
        base,
        settings=settings,
        clock=SystemClock(),
        installation=Installation(
            kek=KekRing(Kek.from_secret(b"k" * 32)), admin_secret=ADMIN_TOKEN
        ),
        issuer="https://issuer.example",
        caps=derive_caps(1024),
    )
    base.hasher.close()
    assert not data_dir.exists()  # the store was not opened
    assert components.issuer == "https://issuer.example"
    assert components.admin_only is None  # no separate admin address
    assert [type(s).__name__ for s in components.public] == [
        "TokenServicer",
        "KeyServicer",
        "AdminServicer",
        "RevocationServicer",
    ]
    assert len(components.http) == 1  # /metrics served on the public HTTP listener


async def test_the_authority_has_the_same_shape_before_and_after_it_has_run(
    tmp_path: Path,
) -> None:
    authority = Authority(_settings(tmp_path))
    before = set(vars(authority))
    with pytest.raises(RuntimeError, match="not been started"):
        _ = authority.components
    try:
        await authority.start()
        assert set(vars(authority)) == before
        assert authority.ports.http and authority.ports.grpc
        assert authority.components.issuer == f"http://127.0.0.1:{authority.ports.http}"
    finally:
        await authority.stop(grace=0.5)
    assert set(vars(authority)) == before
