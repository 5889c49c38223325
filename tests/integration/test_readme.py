"""The README's examples, run as a newcomer would paste them, against a real server.

A fenced block right after a ``<!-- test: NAME -->`` line is runnable: ``sh`` blocks run
in bash (``set -euo pipefail``), ``python`` blocks in this interpreter, in the order of
the README, from the checkout, against one fresh server. The README shows the defaults
``make run`` listens on; the test replaces ``127.0.0.1:50051`` and
``http://127.0.0.1:8080`` with the server's real addresses and ``.venv/bin/`` with this
interpreter's directory, and gives the CLI the server's data directory
(``AUTHORITY_DATA_DIR``), where the Quick start server keeps its admin credential.

Every other fenced block is named in ``NOT_RUN`` (by how its first line starts) with the
reason;
a new block in neither place fails the test. Not run:

- the ``make run`` / ``make test`` blocks: the test starts the server itself, and
  ``make test`` is the suite that runs this test;
- output shown to the reader (the ``token verify`` verdict, the discovery document,
  which ``tests/integration/test_oauth_http.py`` compares with the served one), and the
  repository tree;
- production-mode settings (a PostgreSQL and Redis of the reader's own);
- fragments of the reader's own program (``LocalVerifier`` with ``await`` and the
  reader's ``secret`` and ``token``; an interceptor for the reader's gRPC server);
- the example backend and the Envoy commands: long-running processes
  (``tests/envoy`` runs a real Envoy; ``clients/python/examples`` has its own tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.server import ADMIN_TOKEN, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- test: ([a-z0-9-]+) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")

RUN = (
    "quickstart",
    "refresh-and-logout",
    "service-clients",
    "keys",
    "quickstart-python",
    "oauth-curl",
    "revocation-reader",
)
NOT_RUN = {
    "make run    # creates .venv": "make test runs this very test",
    "make run": "the test starts the server itself",
    "{": "output shown to the reader",
    "export AUTHORITY_DATABASE_URL=": "the reader's own PostgreSQL and Redis",
    "from authority_client import ClientCredentialsTokens, LocalVerifier": "uses await, secret",
    "import grpc": "fragment of the reader's gRPC server",
    "make run &   # the authority": "a long-running example backend",
    "envoy --disable-hot-restart -c deploy/envoy/envoy.yaml": "a long-running Envoy",
    "proto/authority/v1/   the contracts": "the repository's tree",
    "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318": "needs the reader's collector",
}


@dataclass(frozen=True)
class Block:
    name: str  # the marker's name, "" when unmarked
    language: str
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        body = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(marker.group(1) if marker else "", fence.group(1), body, index + 1))
        index = end + 1
    return found


def test_every_block_is_run_or_excused() -> None:
    found = blocks(README.read_text())
    assert [b.name for b in found if b.name] == list(RUN)
    for block in found:
        if not block.name:
            first = block.code.splitlines()[0]
            excused = any(first.startswith(start) for start in NOT_RUN)
            assert excused, f"README line {block.line}: mark it runnable or excuse it"


def _environment(server: ServerProcess) -> dict[str, str]:
    return {
        **os.environ,
        "AUTHORITY_GRPC_ADDRESS": server.target,
        "AUTHORITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "AUTHORITY_DATA_DIR": str(server.data_dir),
    }


def _localize(code: str, server: ServerProcess) -> str:
    return (
        code.replace("http://127.0.0.1:8080", server.http)
        .replace("127.0.0.1:50051", server.target)
        .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    )


def _run(block: Block, server: ServerProcess) -> str:
    code = _localize(block.code, server)
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        assert block.language == "sh", block
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=_environment(server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"README {block.name} (line {block.line}):\n{done.stderr}"
    return done.stdout


def test_the_readme_examples_work_as_written(server: ServerProcess) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("curl is needed for the README's examples")
        pytest.skip("curl is not installed")
    output = {b.name: _run(b, server) for b in blocks(README.read_text()) if b.name}

    assert "VERIFY_RESULT_VALID" in output["quickstart"]
    assert '"keys"' in output["quickstart"]  # the JWKS
    assert output["quickstart-python"].startswith("VERIFY_RESULT_VALID p_")
    assert "client_secret" in output["service-clients"]
    assert "client_secret" in output["revocation-reader"]
    oauth = output["oauth-curl"]
    assert '"error"' not in oauth, oauth
    assert '"active":true' in oauth.replace(" ", ""), oauth
    assert re.search(r"\b200\n", oauth), oauth  # the revocation's status
    assert oauth.count('"access_token"') == 2  # client credentials (basic) and the refresh
    assert f'"token_endpoint": "{server.http}/oauth2/token"' in oauth  # the discovery document
