"""A third-party Node client, openid-client (tests/oauth_node, npm-locked), against a real
server: discovery, client credentials with both authentication methods, introspection and
revocation, configured only from the discovery document.

`make node-deps` (part of `make test`) installs the locked packages; when they are missing
this test runs `npm ci` itself. Without node or npm it skips with the reason, and fails under
AUTHORITY_TEST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import GRANTS, make_client

PROJECT = Path(__file__).resolve().parents[1] / "oauth_node"


def _unavailable(message: str) -> None:
    if os.environ.get("AUTHORITY_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@cache
def _node_problem() -> str | None:
    """Why openid-client cannot run here, or None once `npm ci` has installed it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are needed for the openid-client test (Node 20+)"
    if not (PROJECT / "node_modules" / "openid-client" / "package.json").exists():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if installed.returncode != 0:
            return f"npm ci in {PROJECT} failed: {installed.stderr.strip()[-500:]}"
    return None


@pytest.fixture
def node() -> str:
    problem = _node_problem()
    if problem is not None:
        _unavailable(problem)
    found = shutil.which("node")
    assert found is not None
    return found


def run_check(
    node: str, server: ServerProcess, client_id: str, secret: str, method: str
) -> dict[str, object]:
    env = {
        **os.environ,
        "AUTHORITY_ISSUER": server.http,
        "OAUTH_CLIENT_ID": client_id,
        "OAUTH_CLIENT_SECRET": secret,
        "OAUTH_AUTH_METHOD": method,
    }
    done = subprocess.run(
        [node, "check.mjs"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("method", ["basic", "post"])
def test_openid_client_discovers_gets_introspects_and_revokes(
    node: str, server: ServerProcess, method: str
) -> None:
    secret = make_client(server, "svc", (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,))
    result = run_check(node, server, "svc", secret, method)

    discovered = result["discovery"]
    assert isinstance(discovered, dict)
    assert discovered["issuer"] == server.http
    assert discovered["token_endpoint"] == server.http + "/oauth2/token"
    assert "client_credentials" in discovered["grant_types_supported"]

    token = result["token"]
    assert isinstance(token, dict)
    assert token["token_type"] == "bearer"  # openid-client lower-cases it
    assert token["scope"] == "read" and token["has_refresh_token"] is False
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
    claims = token["claims"]
    assert isinstance(claims, dict)
    assert claims["sub"] == "svc" and claims["client_id"] == "svc" and "sid" not in claims

    before = result["introspection_before"]
    assert isinstance(before, dict)
    assert before["active"] is True
    assert before["client_id"] == "svc" and before["scope"] == "read"
    assert before["jti"] == claims["jti"]
    assert result["introspection_after"] == {"active": False}


def test_openid_client_reports_a_wrong_secret_as_invalid_client(
    node: str, server: ServerProcess
) -> None:
    make_client(server, "svc", (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,))
    env = {
        **os.environ,
        "AUTHORITY_ISSUER": server.http,
        "OAUTH_CLIENT_ID": "svc",
        "OAUTH_CLIENT_SECRET": "cs_wrong",
    }
    done = subprocess.run(
        [node, "check.mjs"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    failure = json.loads(done.stdout)
    assert failure["status"] == 401 and failure["oauth_error"] == "invalid_client", failure
