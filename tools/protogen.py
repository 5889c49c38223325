"""Generate the Python stubs for proto/ into clients/python/authority/v1, or check them.

The stubs live in exactly one place, ``authority/v1`` inside the client distribution
(``clients/python``), which ships them; the server depends on it. The proto path equals
the import path, so generated modules import each other without rewriting, and both the
server and the client import that one copy as ``authority.v1``.

Run from the checkout: ``python -m tools.protogen [--check]`` (``make proto``).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
# The import root the stubs are written under (they land in OUT_ROOT/authority/v1): the
# root of the client distribution, which owns them.
OUT_ROOT = ROOT / "clients" / "python"
PACKAGE_DIR = Path("authority") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
INIT_TEXT = (
    '"""Generated gRPC stubs for authority.v1. Regenerate with `make proto`; never edit."""\n'
)


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}; run `make venv`")
    return str(path)


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every .proto file and return the generated files (relative)."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
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
    (out_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    return sorted(p.relative_to(out_root) for p in (out_root / PACKAGE_DIR).iterdir())


def _current(root: Path) -> list[Path]:
    directory = root / PACKAGE_DIR
    if not directory.exists():
        return []
    return sorted(
        p.relative_to(root)
        for p in directory.iterdir()
        if p.name == "__init__.py" or p.name.endswith(GENERATED_SUFFIXES)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = generate(fresh_root)
        if args.check:
            stale = [
                str(p)
                for p in sorted(set(fresh) | set(_current(OUT_ROOT)))
                if not (OUT_ROOT / p).exists()
                or not (fresh_root / p).exists()
                or not filecmp.cmp(OUT_ROOT / p, fresh_root / p, shallow=False)
            ]
            if stale:
                print("stale generated stubs (run `make proto`):", *stale, sep="\n  ")
                return 1
            print(f"stubs up to date ({len(fresh)} files)")
            return 0
        for old in _current(OUT_ROOT):
            (OUT_ROOT / old).unlink()
        for path in fresh:
            (OUT_ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh_root / path, OUT_ROOT / path)
        print(f"generated {len(fresh)} files into {(OUT_ROOT / PACKAGE_DIR).relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
