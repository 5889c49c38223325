"""`buf breaking` against the previous commit on main: the contracts are a public API.

Skips (saying so) only when there is no previous commit with contracts to compare
against: the first commit, or a shallow clone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGAINST_REF = "HEAD~1"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["git", *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    buf = Path(sys.executable).parent / "buf"
    previous = _git("rev-parse", "--verify", "--quiet", f"{AGAINST_REF}^{{commit}}")
    if previous.returncode != 0:
        print(f"buf breaking: skipped, no {AGAINST_REF} (first commit or shallow clone)")
        return 0
    has_protos = _git("ls-tree", "-r", "--name-only", AGAINST_REF, "--", "proto/buf.yaml")
    if not has_protos.stdout.strip():
        print(f"buf breaking: skipped, {AGAINST_REF} has no proto/buf.yaml")
        return 0
    against = f".git#ref={AGAINST_REF},subdir=proto"
    result = subprocess.run(  # noqa: S603
        [str(buf), "breaking", "proto", "--against", against], cwd=ROOT, check=False
    )
    if result.returncode == 0:
        commit = previous.stdout.strip()[:12]
        print(f"buf breaking: no breaking changes against {AGAINST_REF} ({commit})")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
