"""docs/runbook.md, performed: the operator's exact commands, via the CLI, against a real
server. If the runbook and the product drift apart, these tests say so before an incident
does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

from authority.cli import build_parser
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "a perfectly fine passphrase"


def _cli(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`authority ...` with the settings an operator's shell would have."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")},
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


def _ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _login(server: ServerProcess, *extra: str) -> dict[str, Any]:
    issued = _cli(
        server, "token", "issue", "--principal", "alice", "--password-stdin", *extra, stdin=PASSWORD
    )
    return dict(_ok(issued))


def _kid(token: str) -> str:
    header = token.partition(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def _states(server: ServerProcess) -> dict[str, str]:
    return {k["kid"]: k["state"] for k in _ok(_cli(server, "keys", "list"))["keys"]}


def test_the_key_compromise_procedure(server: ServerProcess) -> None:
    _ok(_cli(server, "principals", "create", "alice", "--password-stdin", stdin=PASSWORD))
    before = _login(server)["access_token"]

    # authority keys list: find the kid, state KEY_STATE_ACTIVE
    active = [kid for kid, state in _states(server).items() if state == "KEY_STATE_ACTIVE"]
    assert active == [_kid(before)]
    kid = active[0]

    # authority keys compromise --reason "INC-1234" -- <kid>  (a kid may start with "-")
    compromised = _ok(_cli(server, "keys", "compromise", "--reason", "INC-1234", "--", kid))
    assert compromised["compromised_key"]["state"] == "KEY_STATE_COMPROMISED"

    # authority keys list: <kid> is now KEY_STATE_COMPROMISED
    assert _states(server)[kid] == "KEY_STATE_COMPROMISED"

    # authority jwks: <kid> is no longer listed (neither over HTTP, what Envoy fetches)
    assert kid not in {k["kid"] for k in _ok(_cli(server, "jwks"))["keys"]}
    with urllib.request.urlopen(server.http + "/.well-known/jwks.json", timeout=10) as answer:
        assert kid not in {k["kid"] for k in json.load(answer)["keys"]}

    # Verify answers UNKNOWN_KEY for every token the key signed.
    rejected = _cli(server, "token", "verify", before)
    assert rejected.returncode == 3
    assert json.loads(rejected.stdout)["result"] == "VERIFY_RESULT_UNKNOWN_KEY"

    # New logins work and verify, under another key.
    after = _login(server)["access_token"]
    assert _kid(after) != kid
    assert _ok(_cli(server, "token", "verify", after))["result"] == "VERIFY_RESULT_VALID"


def test_mass_logout_works_exactly_as_documented(server: ServerProcess) -> None:
    _ok(_cli(server, "principals", "create", "alice", "--password-stdin", stdin=PASSWORD))
    _ok(
        _cli(
            server,
            *("clients", "create", "app", "--public", "--audience", "default"),
            *("--grant", "password", "--grant", "refresh_token"),
        )
    )
    default_session = _login(server)
    app_session = _login(server, "--client-id", "app")

    # Part 1: a key compromise ends the access tokens, but refresh sessions survive it.
    kid = _kid(default_session["access_token"])
    _ok(_cli(server, "keys", "compromise", "--reason", "mass logout", "--", kid))
    survived = _cli(
        server,
        *("token", "refresh", "--raw", "--password-stdin"),
        stdin=default_session["refresh_token"],
    )
    assert survived.returncode == 0, survived.stderr
    default_refresh = _login(server)["refresh_token"]

    # Part 2: revoke every registered client's sessions by client id...
    _ok(_cli(server, "revoke", "client-id", "app"))
    refused = _cli(
        server,
        *("token", "refresh", "--client-id", "app", "--password-stdin"),
        stdin=app_session["refresh_token"],
    )
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr

    # ... but the default client cannot be revoked by its (empty) id ...
    empty = _cli(server, "revoke", "client-id", "")
    assert empty.returncode == 1
    assert "INVALID_ARGUMENT: client_id must not be empty" in empty.stderr

    # ... only per subject.
    principal_id = _ok(_cli(server, "principals", "get", "alice"))["id"]
    _ok(_cli(server, "revoke", "subject", principal_id))
    ended = _cli(server, *("token", "refresh", "--password-stdin"), stdin=default_refresh)
    assert ended.returncode == 1
    assert "UNAUTHENTICATED" in ended.stderr


def test_the_documented_compromise_command_takes_a_kid_that_starts_with_a_dash() -> None:
    """About 1 kid in 64 starts with "-": the runbook's `--` must make it a kid, not an option."""
    args = build_parser().parse_args(
        ["keys", "compromise", "--reason", "INC-1234", "--", "-rlq937BxC7rb3eGE"]
    )
    assert (args.kid, args.reason) == ("-rlq937BxC7rb3eGE", "INC-1234")
