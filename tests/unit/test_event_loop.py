"""Which event loop ``authority serve`` runs on (AUTHORITY_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from authority.config import ConfigError, Settings
from authority.runtime import event_loop


async def _running_loop() -> str:
    return event_loop.loop_name(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert event_loop.run(_running_loop(), "auto") == "uvloop"
    assert event_loop.run(_running_loop(), "uvloop") == "uvloop"


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    assert event_loop.loop_factory("asyncio") is None
    assert event_loop.run(_running_loop(), "asyncio") == "asyncio"


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def refuse(name: str, package: str | None = None) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", refuse)


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert event_loop.loop_factory("auto") is None
    assert event_loop.run(_running_loop(), "auto") == "asyncio"


def test_uvloop_insisted_on_but_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_uvloop(monkeypatch)
    main = _running_loop()
    with pytest.raises(ConfigError, match=r"EVENT_LOOP=uvloop.*set AUTHORITY_EVENT_LOOP=asyncio"):
        event_loop.run(main, "uvloop")
    assert main.cr_frame is None  # closed, never run: no "never awaited" warning


def test_the_setting_accepts_the_three_choices_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice in ("auto", "uvloop", "asyncio"):
        monkeypatch.setenv("AUTHORITY_EVENT_LOOP", choice)
        assert Settings.load().event_loop == choice
    monkeypatch.delenv("AUTHORITY_EVENT_LOOP")
    assert Settings.load().event_loop == "auto"
    monkeypatch.setenv("AUTHORITY_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="AUTHORITY_EVENT_LOOP"):
        Settings.load()
