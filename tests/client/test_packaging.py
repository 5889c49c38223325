"""The distributions' boundaries, read from the sources: what the client may import, what
each wheel depends on and ships, and how the dev install exposes both from the checkout.
The integration tests at the end build and install the real artefacts."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CLIENT = ROOT / "clients" / "python"
ALLOWED = {"authority_client", "grpc", "google", "jwt", "cryptography", "nacl"}
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


def test_the_client_imports_only_its_own_stubs_and_core_grpc_protobuf_pyjwt_crypto_nacl() -> None:
    sources = [*(CLIENT / "authority_client").glob("*.py"), *(CLIENT / "authority").rglob("*.py")]
    for path in sorted(p for p in sources if "v1" not in p.parts):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "authority":
                assert any(name == s or name.startswith(s + ".") for s in SHARED), (path, name)
            else:
                assert top in ALLOWED or top in sys.stdlib_module_names, (path, name)


def test_the_client_wheel_depends_on_five_packages_and_owns_the_shared_namespace() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=\[]", d)[0] for d in project["project"]["dependencies"]}
    assert names == {"grpcio", "protobuf", "pyjwt", "cryptography", "pynacl"}
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
    assert "-e ./clients/python" in install and "-e '.[dev" in install
    (stamp,) = [line for line in makefile.splitlines() if line.startswith("$(STAMP):")]
    assert "pyproject.toml" in stamp.split() and "clients/python/pyproject.toml" in stamp.split()


# -- the real artefacts ------------------------------------------------------------------
# Builds both sdists and wheels (each wheel from its sdist), the client from a copy of
# clients/python outside the repository, installs the wheels into a fresh venv and runs
# the server from it. About a minute: third-party wheels come from pip's cache.

DEV_ONLY = ("authority/bench/", "authority/tools/", "tests/", "clients/")


def _run(*command: str | Path, cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _contents(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def _licenses(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("/METADATA")))
        files = {n.split("/licenses/", 1)[1] for n in archive.namelist() if "/licenses/" in n}
    assert b"License-Expression: Apache-2.0" in metadata
    return files


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dist")
    client_copy = shutil.copytree(
        CLIENT, work / "client-src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = work / "dist"
    _run(sys.executable, "-m", "build", "--outdir", out, client_copy, cwd=work)
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=work)
    return out


@pytest.mark.integration
def test_each_file_belongs_to_exactly_one_wheel(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        "authority-0.1.0-py3-none-any.whl",
        "authority-0.1.0.tar.gz",
        "authority_client-0.1.0-py3-none-any.whl",
        "authority_client-0.1.0.tar.gz",
    ]
    server = _contents(dist / "authority-0.1.0-py3-none-any.whl")
    client = _contents(dist / "authority_client-0.1.0-py3-none-any.whl")
    assert not server & client
    assert "authority/__init__.py" not in server | client  # the namespace belongs to neither
    assert {"authority/v1/token_pb2.py", "authority/jose/jws.py"} <= client
    assert "authority_client/verifier.py" in client
    assert {n.split("/")[0] for n in client} == {"authority", "authority_client"}
    assert {n.split("/")[1] for n in client if n.startswith("authority/")} == {"v1", "jose"}
    assert {"authority/cli/__init__.py", "authority/app.py"} <= server
    assert {n.split("/")[0] for n in server} == {"authority"}
    assert not [n for n in server if n.startswith(DEV_ONLY) or "/v1/" in n or "/jose/" in n]
    # PEP 561 in a namespace package: a py.typed in every directory of ours with modules
    # (mypy finds authority/py.typed for the modules at the top; others look per package).
    packages = {n.rsplit("/", 1)[0] for n in server if n.endswith(".py")}
    assert {p + "/py.typed" for p in packages} <= server
    assert {"authority_client/py.typed", "authority/jose/py.typed"} <= client
    # The license texts travel in the metadata (PEP 639), NOTICE with the server's data.
    assert _licenses(dist / "authority-0.1.0-py3-none-any.whl") == {"LICENSE", "NOTICE"}
    assert _licenses(dist / "authority_client-0.1.0-py3-none-any.whl") == {"LICENSE"}
    assert "authority/data/README.md" in server  # the password list's BSD notice


@pytest.mark.integration
def test_the_installed_wheels_serve(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile",
        "--find-links", dist, dist / "authority-0.1.0-py3-none-any.whl",
        dist / "authority_client-0.1.0-py3-none-any.whl",
        cwd=tmp_path,
    )  # fmt: skip
    where = _run(
        python, "-c", "import authority.api, authority.jose, authority.v1, authority_client as c;"
        "print(authority.api.__file__, authority.jose.__file__, authority.v1.__file__, c.__file__)",
        cwd=tmp_path,
    ).split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where  # not the checkout
    # A type checker reads the installed server's annotations (py.typed), at the top of
    # the namespace and in a subpackage: the wrong types below are errors, not skipped.
    (tmp_path / "use.py").write_text(
        "from authority.http_conditional import none_match\n"
        "from authority.domain.bounds import MAX_SECRET_LENGTH\n"
        "a: str = none_match(None, '\"x\"')\n"
        "b: str = MAX_SECRET_LENGTH\n"
    )
    typed = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", python, "--no-incremental",
         "--config-file", os.devnull, "use.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "py.typed" not in typed.stdout, typed.stdout
    assert typed.stdout.count("[assignment]") == 2, typed.stdout
    assert "serve" in _run(venv / "bin" / "authority", "--help", cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env |= {
        "AUTHORITY_DATA_DIR": str(tmp_path / "data"),
        "AUTHORITY_GRPC_ADDRESS": "127.0.0.1:0",
        "AUTHORITY_HTTP_ADDRESS": "127.0.0.1:0",
        "AUTHORITY_LOG_FORMAT": "json",
    }
    server = subprocess.Popen(
        [venv / "bin" / "authority", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line)
            if '"authority.ready"' in line:
                break
        else:
            pytest.fail("the installed server exited before ready:\n" + "".join(lines))
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, "".join(lines)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
