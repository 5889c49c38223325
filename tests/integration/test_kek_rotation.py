"""KEK rotation without downtime, end to end, exactly as docs/runbook.md tells an operator:

1. deploy with AUTHORITY_KEK=new and AUTHORITY_KEK_PREVIOUS=old (servers open both),
2. run `authority kek rotate` while the servers run (re-wraps every private key),
3. deploy with only AUTHORITY_KEK=new.

Tokens issued before the rotation keep verifying throughout, and once the old KEK is
gone a server configured with only the old KEK refuses to start, naming the KEK id.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from authority.crypto import Kek
from authority.v1 import token_pb2
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "a perfectly fine passphrase"


def _kek_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _kek_id(text: str) -> str:
    return Kek.from_secret(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))).id


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings every server and CLI run of one test shares: the store, and a fixed issuer
    (the ephemeral HTTP port changes across restarts, a real issuer does not)."""
    env = {
        "AUTHORITY_ISSUER": "https://auth.example.test",
        # Servers notice the rotation's commit quickly, so the test sees them reload.
        "AUTHORITY_KEY_CHECK_INTERVAL": "200ms",
    }
    with ExitStack() as stack:
        if request.param == "postgresql":
            env["AUTHORITY_DATABASE_URL"] = stack.enter_context(services.fresh_database())
        yield env


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`authority ...` as an operator would run it: against the store, with the same KEKs."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")}
    return subprocess.run(
        [sys.executable, "-m", "authority.cli", *args],
        capture_output=True,
        text=True,
        env={
            **clean,
            "AUTHORITY_DATA_DIR": str(data_dir),
            "AUTHORITY_ADMIN_TOKEN": ADMIN_TOKEN,
            **env,
        },
        timeout=60,
        check=False,
    )


def _verify(server: ServerProcess, token: str) -> token_pb2.VerifyResult.ValueType:
    with server.client() as client:
        return client.verify(token).result


def _issue(server: ServerProcess) -> str:
    with server.client() as client:
        return client.issue_with_password("alice", PASSWORD).access_token


def test_kek_rotation_keeps_every_token_valid_and_retires_the_old_kek(
    start_server: Callable[..., ServerProcess], store_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    old, new = _kek_text(), _kek_text()
    old_id, new_id = _kek_id(old), _kek_id(new)

    # Before: the fleet runs on the old KEK, with an active key and a pending one.
    before = start_server(data_dir, AUTHORITY_KEK=old, **store_env)
    with before.client() as client:
        client.create_principal("alice", PASSWORD)
        client.rotate_keys()  # a pending key too: both must be re-wrapped
    old_token = _issue(before)
    assert before.terminate() == 0

    # Step 1: new and previous. The servers open keys under either KEK.
    both = {"AUTHORITY_KEK": new, "AUTHORITY_KEK_PREVIOUS": old, **store_env}
    during = start_server(data_dir, **both)
    assert _verify(during, old_token) == token_pb2.VERIFY_RESULT_VALID

    shown = _cli(data_dir, both, "kek", "id")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"kek_id": new_id, "previous_kek_ids": [old_id]}
    assert new not in shown.stdout and old not in shown.stdout  # never the secrets

    # Step 2: re-wrap, while the server runs; a second run has nothing left to do.
    rotated = _cli(data_dir, both, "kek", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {
        "kek_id": new_id,
        "rewrapped": 2,
        "already_current": 0,
        "without_private_key": 0,
        "webhook_secrets_rewrapped": 0,
    }
    again = _cli(data_dir, both, "kek", "rotate")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rewrapped"] == 0
    assert json.loads(again.stdout)["already_current"] == 2

    time.sleep(1)  # several key checks: the running server reloads the re-wrapped ring
    assert _verify(during, old_token) == token_pb2.VERIFY_RESULT_VALID
    during_token = _issue(during)
    assert _verify(during, during_token) == token_pb2.VERIFY_RESULT_VALID
    assert not [e for e in during.events() if e.get("event") == "key.tick_failed"]
    assert during.terminate() == 0

    # Step 3: only the new KEK. Everything was re-wrapped, so nothing needs the old one.
    after = start_server(data_dir, AUTHORITY_KEK=new, **store_env)
    assert _verify(after, old_token) == token_pb2.VERIFY_RESULT_VALID
    assert _verify(after, during_token) == token_pb2.VERIFY_RESULT_VALID
    assert _verify(after, _issue(after)) == token_pb2.VERIFY_RESULT_VALID
    assert after.terminate() == 0

    # A server left behind on the old KEK cannot open the keys, and says which KEK it needs.
    stale = ServerProcess(data_dir, {"AUTHORITY_KEK": old, **store_env})
    try:
        with pytest.raises(RuntimeError, match="exited before ready"):
            stale.start()
        assert stale.process is not None
        assert stale.process.wait(20) != 0
    finally:
        stale.kill()
    output = "\n".join(stale.lines)
    assert f"unknown KEK id {new_id!r}" in output
    assert old not in output and new not in output


def test_rotation_refuses_keys_under_a_kek_it_was_not_given(
    start_server: Callable[..., ServerProcess], store_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    old, new = _kek_text(), _kek_text()
    server = start_server(data_dir, AUTHORITY_KEK=old, **store_env)
    assert server.terminate() == 0

    # The operator forgot AUTHORITY_KEK_PREVIOUS: nothing may change.
    refused = _cli(data_dir, {"AUTHORITY_KEK": new, **store_env}, "kek", "rotate")
    assert refused.returncode == 2
    assert f"KEK id {_kek_id(old)!r}" in refused.stderr
    assert "AUTHORITY_KEK_PREVIOUS" in refused.stderr
    assert old not in refused.stderr + refused.stdout

    still_old = start_server(data_dir, AUTHORITY_KEK=old, **store_env)
    with still_old.client() as client:
        client.create_principal("alice", PASSWORD)
    assert _verify(still_old, _issue(still_old)) == token_pb2.VERIFY_RESULT_VALID
