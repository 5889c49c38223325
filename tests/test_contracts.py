"""The generated stubs are exactly what `make proto` makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from authority_client import client

import authority.v1.token_pb2 as stubs

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_contracts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.protogen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_and_client_import_the_same_stub_modules() -> None:
    assert client.token_pb2 is stubs
    assert Path(stubs.__file__).resolve().parent == ROOT / "clients" / "python" / "authority" / "v1"
