"""The `authority` command against a real server: what an operator types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from authority.v1 import keys_pb2
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "a perfectly fine passphrase"
ROOT = Path(__file__).resolve().parents[2]


def _cli(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AUTHORITY_GRPC_ADDRESS": server.target,
        "AUTHORITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "AUTHORITY_DATA_DIR": str(server.data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "authority.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_an_operator_manages_principals_tokens_and_revocation(server: ServerProcess) -> None:
    created = _cli(server, "principals", "create", "carol", "--password-stdin", stdin=PASSWORD)
    assert created.returncode == 0, created.stderr
    principal = json.loads(created.stdout)
    assert principal["name"] == "carol"
    assert PASSWORD not in created.stdout + created.stderr

    issued = _cli(
        server, "token", "issue", "--principal", "carol", "--password-stdin", stdin=PASSWORD
    )
    assert issued.returncode == 0, issued.stderr
    pair = json.loads(issued.stdout)
    assert pair["refresh_token"].startswith("rt_")

    verified = _cli(server, "token", "verify", pair["access_token"])
    assert verified.returncode == 0
    assert json.loads(verified.stdout)["claims"]["subject"] == principal["id"]

    refreshed = _cli(
        server, "token", "refresh", "--raw", "--password-stdin", stdin=pair["refresh_token"]
    )
    assert refreshed.returncode == 0, refreshed.stderr

    revoked = _cli(server, "revoke", "access-token", "--password-stdin", stdin=pair["access_token"])
    assert revoked.returncode == 0, revoked.stderr
    rejected = _cli(server, "token", "verify", pair["access_token"])
    assert rejected.returncode == 3
    assert json.loads(rejected.stdout)["result"] == "VERIFY_RESULT_REVOKED"

    disabled = _cli(server, "principals", "disable", "carol")
    assert json.loads(disabled.stdout)["disabled"] is True
    still = _cli(server, "token", "verify", refreshed.stdout.strip())
    assert json.loads(still.stdout)["result"] == "VERIFY_RESULT_REVOKED"
    refused = _cli(
        server, "token", "issue", "--principal", "carol", "--password-stdin", stdin=PASSWORD
    )
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_set_password_revokes_sessions_unless_told_to_keep_them(server: ServerProcess) -> None:
    _cli(server, "principals", "create", "erin", "--password-stdin", stdin=PASSWORD)

    def login(password: str) -> str:
        issued = _cli(
            server, "token", "issue", "--principal", "erin", "--password-stdin", stdin=password
        )
        assert issued.returncode == 0, issued.stderr
        return str(json.loads(issued.stdout)["access_token"])

    def result(token: str) -> str:
        return str(json.loads(_cli(server, "token", "verify", token).stdout)["result"])

    other = PASSWORD + " two"
    kept = login(PASSWORD)
    changed = _cli(
        server,
        "principals",
        "set-password",
        "erin",
        "--keep-sessions",
        "--password-stdin",
        stdin=other,
    )
    assert changed.returncode == 0, changed.stderr
    assert result(kept) == "VERIFY_RESULT_VALID"
    changed = _cli(server, "principals", "set-password", "erin", "--password-stdin", stdin=PASSWORD)
    assert changed.returncode == 0, changed.stderr
    assert result(kept) == "VERIFY_RESULT_REVOKED"
    assert result(login(PASSWORD)) == "VERIFY_RESULT_VALID"
    both = _cli(
        server,
        "principals",
        "set-password",
        "erin",
        "--keep-sessions",
        "--revoke-sessions",
        "--password-stdin",
        stdin=other,
    )
    assert both.returncode != 0
    assert "not allowed with" in both.stderr


def test_an_operator_registers_a_service_client(server: ServerProcess) -> None:
    created = _cli(
        server,
        "clients",
        "create",
        "reports",
        "--grant",
        "client_credentials",
        "--audience",
        "reports-api",
        "--scope",
        "reports:read",
        "--default-scope",
        "reports:read",
        "--access-token-ttl",
        "5m",
    )
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    secret = answer["client_secret"]
    assert answer["client"]["access_token_ttl"] == "300s"
    with server.client() as client:
        token = client.issue_with_client_credentials("reports", secret).access_token
        claims = client.verify(token, audience=["reports-api"]).claims
        assert claims.subject == "reports"
        assert list(claims.scope) == ["reports:read"]
    shown = _cli(server, "clients", "get", "reports")
    assert secret not in shown.stdout
    rotated = _cli(server, "clients", "rotate-secret", "reports")
    assert rotated.returncode == 0
    assert rotated.stdout.strip() != secret
    bad = _cli(server, "clients", "create", "x y", "--grant", "password", "--audience", "a")
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr


def test_a_kid_that_starts_with_a_dash_reaches_the_server(server: ServerProcess) -> None:
    """One kid in 64 starts with "-": every spelling must reach the server as a kid."""
    kid = "-madeUpKidThatArgparseWouldTakeForAnOption"
    for spelling in (
        ("keys", "compromise", kid),
        ("keys", "compromise", kid, "--reason", "INC-1"),
        ("keys", "compromise", "--reason", "INC-1", kid),
        ("keys", "compromise", "--kid", kid),
        ("keys", "compromise", "--", kid),
    ):
        answer = _cli(server, *spelling)
        assert answer.returncode == 1, (spelling, answer.stderr)
        assert "NOT_FOUND" in answer.stderr and "usage:" not in answer.stderr, spelling

    with server.client() as client:
        real = next(k.kid for k in client.list_keys() if k.state == keys_pb2.KEY_STATE_ACTIVE)
    compromised = _cli(server, "keys", "compromise", "--reason", "-test", real)
    assert compromised.returncode == 0, compromised.stderr
    with server.client() as client:
        states = {k.kid: k.state for k in client.list_keys()}
    assert states[real] == keys_pb2.KEY_STATE_COMPROMISED

    two = _cli(server, "keys", "compromise", kid, "--kid", "other")
    assert two.returncode == 2 and "exactly one kid" in two.stderr


def test_a_password_grant_through_a_confidential_client(server: ServerProcess) -> None:
    """The client secret comes from stdin (after the password) or a prompt, never argv."""
    created = _cli(
        server,
        *("clients", "create", "webapp", "--grant", "password", "--grant", "refresh_token"),
        *("--audience", "default"),
    )
    assert created.returncode == 0, created.stderr
    client_secret = json.loads(created.stdout)["client_secret"]
    assert _cli(server, "principals", "create", "dora", "--password-stdin", stdin=PASSWORD)
    login = ("token", "issue", "--principal", "dora", "--client-id", "webapp", "--password-stdin")

    without = _cli(server, *login, stdin=PASSWORD)
    assert without.returncode == 1 and "UNAUTHENTICATED" in without.stderr
    wrong = _cli(server, *login, "--client-secret-stdin", stdin=f"{PASSWORD}\nnot-the-secret\n")
    assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stderr

    issued = _cli(server, *login, "--client-secret-stdin", stdin=f"{PASSWORD}\n{client_secret}\n")
    assert issued.returncode == 0, issued.stderr
    assert client_secret not in issued.stdout + issued.stderr
    pair = json.loads(issued.stdout)
    with server.client() as client:
        claims = client.verify(pair["access_token"]).claims
    assert claims.client_id == "webapp"

    refresh = ("token", "refresh", "--client-id", "webapp", "--password-stdin", "--raw")
    refused = _cli(server, *refresh, stdin=pair["refresh_token"])
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    refreshed = _cli(
        server, *refresh, "--client-secret-stdin", stdin=f"{pair['refresh_token']}\n{client_secret}"
    )
    assert refreshed.returncode == 0, refreshed.stderr

    no_client = _cli(
        server,
        *("token", "issue", "--principal", "dora", "--password-stdin"),
        "--client-secret-stdin",
        stdin=f"{PASSWORD}\n{client_secret}\n",
    )
    assert no_client.returncode == 2 and "needs --client-id" in no_client.stderr


def test_version_prints_the_installed_distribution_version() -> None:
    """`authority --version` (the console script) names the version the pyproject declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    script = Path(sys.executable).parent / "authority"
    answer = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == f"authority {declared}\n"
    assert answer.stdout.strip() == f"authority {metadata.version('authority')}"
