"""Generate the Python stubs for proto/, or check them (``make proto``, ``make proto-check``).

Two trees, each owned by exactly one distribution:

- ``proto/authority/v1`` (our API) → ``authority/v1`` in the client distribution
  (``clients/python``), which ships it; the server depends on it.
- ``proto/authority/envoy`` (the subset of Envoy's API that ext_authz speaks) →
  ``authority/envoy`` in the server distribution, the only one that serves it.

The proto path equals the import path, so generated modules import each other without
rewriting. ``google/rpc/status.proto`` is read from the installed googleapis-common-protos,
whose module the generated code then imports.

Run from the checkout: ``python -m tools.protogen [--check]``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# Where googleapis-common-protos keeps google/rpc/status.proto (two levels above it).
_STATUS = find_spec("google.rpc.status_pb2")
if _STATUS is None or _STATUS.origin is None:
    raise SystemExit("googleapis-common-protos is not installed; run `make venv`")
GOOGLEAPIS = Path(_STATUS.origin).parents[2]


@dataclass(frozen=True)
class Tree:
    """One proto subtree and the import root its stubs are written under."""

    source: Path  # relative to PROTO_ROOT, and to the import root
    out_root: Path
    doc: str

    def init_text(self, package: Path) -> str:
        dotted = ".".join(package.parts)
        return f'"""{self.doc} {dotted}. Regenerate with `make proto`; never edit."""\n'


TREES = (
    Tree(Path("authority/v1"), ROOT / "clients" / "python", "Generated gRPC stubs for"),
    Tree(Path("authority/envoy"), ROOT, "Generated stubs of Envoy's ext_authz API subset,"),
)


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}; run `make venv`")
    return str(path)


def _protoc(tree: Tree, out_root: Path) -> None:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / tree.source).rglob("*.proto")
    )
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{GOOGLEAPIS}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stdout}{result.stderr}")


def generate(tree: Tree, out_root: Path) -> list[Path]:
    """Run protoc over the tree; every package directory gets an ``__init__.py`` and a
    ``py.typed`` (PEP 561 in a namespace package). Returns the files, relative."""
    _protoc(tree, out_root)
    top = out_root / tree.source
    for directory in [top, *(p for p in top.rglob("*") if p.is_dir())]:
        package = directory.relative_to(out_root)
        (directory / "__init__.py").write_text(tree.init_text(package))
        (directory / "py.typed").write_text("")
    return sorted(p.relative_to(out_root) for p in top.rglob("*") if p.is_file())


def _is_generated(path: Path) -> bool:
    return path.name in {"__init__.py", "py.typed"} or path.name.endswith(GENERATED_SUFFIXES)


def _current(tree: Tree) -> list[Path]:
    top = tree.out_root / tree.source
    if not top.exists():
        return []
    return sorted(
        p.relative_to(tree.out_root) for p in top.rglob("*") if p.is_file() and _is_generated(p)
    )


def _stale(tree: Tree, fresh_root: Path, fresh: list[Path]) -> list[str]:
    return [
        str(p)
        for p in sorted(set(fresh) | set(_current(tree)))
        if not (tree.out_root / p).exists()
        or not (fresh_root / p).exists()
        or not filecmp.cmp(tree.out_root / p, fresh_root / p, shallow=False)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    stale: list[str] = []
    count = 0
    for tree in TREES:
        with tempfile.TemporaryDirectory() as tmp:
            fresh_root = Path(tmp)
            fresh = generate(tree, fresh_root)
            count += len(fresh)
            if args.check:
                stale += _stale(tree, fresh_root, fresh)
                continue
            for old in _current(tree):
                (tree.out_root / old).unlink()
            for path in fresh:
                (tree.out_root / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(fresh_root / path, tree.out_root / path)
            where = (tree.out_root / tree.source).relative_to(ROOT)
            print(f"generated {len(fresh)} files into {where}")
    if stale:
        print("stale generated stubs (run `make proto`):", *stale, sep="\n  ")
        return 1
    if args.check:
        print(f"stubs up to date ({count} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
