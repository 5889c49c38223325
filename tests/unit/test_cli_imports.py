"""The `authority` command loads only what the chosen command needs.

Operator commands (`authority keys list`, ...) talk to a server through
``authority_client``; loading the server stack for them would make every call slow and
tie an operator's machine to the server's dependencies. Each check runs in a fresh
interpreter, because this test process has long since imported the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Modules only a server (or `serve`/`migrate`/`kek`) needs: gRPC servicers, stores,
# Redis, the HTTP server, logging setup, password hashing, ICU, metrics.
SERVER_ONLY = (
    "authority.app",
    "authority.runtime",
    "authority.api",
    "authority.store",
    "authority.redis",
    "authority.keys",
    "authority.crypto",
    "authority.supervisor",
    "authority.observability",
    "authority.services.minter",
    "authority.services.kek_rotation",
    "asyncpg",
    "aiosqlite",
    "redis",
    "aiohttp",
    "structlog",
    "argon2",
    "icu",
    "prometheus_client",
    "grpc_health.v1",
    "grpc_reflection.v1alpha",
)
OPERATOR_COMMANDS = ("keys", "principals", "clients", "token", "revoke", "audit", "jwks")


def _loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _server_only(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if any(name == m or name.startswith(m + ".") for m in SERVER_ONLY)
    )


def test_keys_list_help_loads_no_server_module() -> None:
    code = (
        "import contextlib\n"
        "from authority.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        "    main(['keys', 'list', '--help'])\n"
    )
    assert _server_only(_loaded_after(code)) == []


def test_keys_list_run_to_the_end_loads_no_server_module(tmp_path: Path) -> None:
    """The whole command: settings, credential, client, the RPC (refused: no server)."""
    code = (
        "from authority.cli import main\n"
        "assert main(['--target', '127.0.0.1:1', 'keys', 'list']) == 1\n"
    )
    loaded = _loaded_after(code, {"AUTHORITY_DATA_DIR": str(tmp_path)})
    assert "authority_client" in loaded
    assert _server_only(loaded) == []


def test_no_operator_command_module_loads_a_server_module() -> None:
    """What ``main`` imports to run any operator command (its module), in one interpreter."""
    modules = ", ".join(f"authority.cli.{command}" for command in OPERATOR_COMMANDS)
    code = f"import authority.cli, authority.cli.dispatch\nimport {modules}\n"
    assert _server_only(_loaded_after(code)) == []


def test_serve_does_load_the_server() -> None:
    """The list above names modules that exist and that ``serve`` really loads."""
    loaded = _server_only(_loaded_after("import authority.cli.serve"))
    assert {"authority.app", "authority.api", "aiohttp", "structlog"} <= set(loaded)
