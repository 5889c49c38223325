"""The distributions' boundaries, read from the sources: what the client may import, what
each wheel depends on and ships, and how the dev install exposes both from the checkout.
(tests/integration/test_distributions.py builds and installs the real wheels.)"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
CLIENT = ROOT / "clients" / "python"
ALLOWED = {"authority_client", "grpc", "google", "jwt", "cryptography"}
SHARED = ("authority.v1", "authority.jose")  # the client distribution's `authority` portion


def _project(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())["project"]  # type: ignore[no-any-return]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_the_client_imports_only_its_own_stubs_and_core_grpc_protobuf_pyjwt_cryptography() -> None:
    sources = [*(CLIENT / "authority_client").glob("*.py"), *(CLIENT / "authority").rglob("*.py")]
    for path in sorted(p for p in sources if "v1" not in p.parts):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "authority":
                assert any(name == s or name.startswith(s + ".") for s in SHARED), (path, name)
            else:
                assert top in ALLOWED or top in sys.stdlib_module_names, (path, name)


def test_the_client_wheel_depends_on_four_packages_and_owns_the_shared_namespace() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=\[]", d)[0] for d in project["project"]["dependencies"]}
    assert names == {"grpcio", "protobuf", "pyjwt", "cryptography"}
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert sorted(wheel["packages"]) == ["authority", "authority_client"]
    assert "force-include" not in wheel  # buildable from a copy of clients/python alone
    # `authority` is a namespace package in both trees: neither wheel owns its __init__.
    assert not (CLIENT / "authority" / "__init__.py").exists()
    assert not (ROOT / "authority" / "__init__.py").exists()
    assert not (ROOT / "authority" / "v1").exists()


def test_the_server_depends_on_the_client_of_the_same_version() -> None:
    server, client = _project(ROOT / "pyproject.toml"), _project(CLIENT / "pyproject.toml")
    assert f"authority-client=={client['version']}" in server["dependencies"]  # type: ignore[operator]


def test_the_dev_install_installs_both_projects_editable() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (install,) = [line for line in makefile.splitlines() if "pip install" in line and "-e" in line]
    assert "-e ./clients/python" in install and "-e '.[dev]'" in install
    (stamp,) = [line for line in makefile.splitlines() if line.startswith("$(STAMP):")]
    assert "pyproject.toml" in stamp.split() and "clients/python/pyproject.toml" in stamp.split()
