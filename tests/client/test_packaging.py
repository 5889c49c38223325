"""The client package's boundaries: what it may import, what its wheel depends on, and how
the dev install exposes it without copying the stubs."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
CLIENT = ROOT / "clients" / "python"
ALLOWED = {"authority_client", "grpc", "google", "jwt", "cryptography"}


def test_the_client_imports_only_stubs_grpc_protobuf_pyjwt_cryptography_and_stdlib() -> None:
    for path in sorted((CLIENT / "authority_client").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "authority":
                    assert name == "authority.v1" or name.startswith("authority.v1."), (path, name)
                else:
                    assert top in ALLOWED or top in sys.stdlib_module_names, (path, name)


def test_the_wheel_depends_on_four_packages_and_ships_the_stubs() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    names = {
        d.split(">")[0].split("<")[0].split("[")[0] for d in project["project"]["dependencies"]
    }
    assert names == {"grpcio", "protobuf", "pyjwt", "cryptography"}
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"] == {"../../authority/v1": "authority/v1"}


def test_the_dev_install_exposes_the_client_without_installing_it_editable() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = root["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "clients/python" in wheel["dev-mode-dirs"]
    install = [
        line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line
    ]
    assert not any("clients/python" in line for line in install)
