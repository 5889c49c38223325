"""Client changes are ordered with the calls that mint tokens for the client.

Client-credentials Issue calls (and token exchanges through the client, which store a
session for the principal) are in flight on every replica while an admin disables the client,
deletes it or rotates its secret. Once the admin call returned, every access token any
of those calls received, before or after, must verify as REVOKED on every replica: a
call that read the client before the change either committed first (and the change's
revocation covers its token, whatever the clock of the replica that minted it) or
answers UNAUTHENTICATED and returns nothing. A rotation with ``keep_tokens`` revokes
nothing, so there every token received must be VALID and minted before the rotation
returned: no call with the old secret committed a token after it. A re-enabled client,
and the rotated secret, get VALID tokens at once.

Runs on the embedded SQLite default and on two PostgreSQL + Redis replicas.
``AUTHORITY_TEST_CLIENT_ORDERING_ROUNDS`` sets the rounds per action.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
ROUNDS = int(os.environ.get("AUTHORITY_TEST_CLIENT_ORDERING_ROUNDS", "3"))
ISSUERS = 12  # client-credentials Issue loops per replica
EXCHANGERS = 2  # token-exchange Issue loops per replica
PASSWORD = "correct horse battery staple"
LIMITS = {
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000000",
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "1000000",
}
Code = grpc.StatusCode
REFUSED = {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED}


@pytest.fixture(params=["sqlite", "postgres+redis"])
def servers(
    request: pytest.FixtureRequest, tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> Iterator[list[ServerProcess]]:
    if request.param == "sqlite":
        yield [start_server(tmp_path / "data", **LIMITS)]
        return
    with services.fresh_database() as database:
        env = {
            **LIMITS,
            "AUTHORITY_DATABASE_URL": database,
            "AUTHORITY_REDIS_URL": services.redis_url(),
            "AUTHORITY_REDIS_PREFIX": f"t{uuid.uuid4().hex[:12]}",
            "AUTHORITY_KEK": "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc",
            "AUTHORITY_ISSUER": "https://auth.example.test",
        }
        yield [start_server(tmp_path / name, **env) for name in ("a", "b")]


@dataclass
class Replica:
    channel: grpc.aio.Channel
    tokens: token_pb2_grpc.TokenServiceStub = field(init=False)
    admin: admin_pb2_grpc.AdminServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = token_pb2_grpc.TokenServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def verdict(self, access_token: str) -> str:
        answer = await self.tokens.Verify(token_pb2.VerifyRequest(token=access_token), timeout=30)
        return token_pb2.VerifyResult.Name(answer.result)


def _cc(client_id: str, secret: str) -> token_pb2.IssueRequest:
    grant = token_pb2.ClientCredentialsGrant(client_id=client_id, client_secret=secret)
    return token_pb2.IssueRequest(client_credentials=grant)


def _exchange(client_id: str, secret: str, name: str) -> token_pb2.IssueRequest:
    """An access token for the principal, minted for the client: its session is stored."""
    grant = token_pb2.TokenExchangeGrant(client_id=client_id, client_secret=secret, subject=name)
    return token_pb2.IssueRequest(token_exchange=grant)


@dataclass
class Round:
    """What the calls of one round received, and how the refused ones were answered."""

    tokens: list[str] = field(default_factory=list)
    refused: Counter[Code] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    warm: asyncio.Event = field(default_factory=asyncio.Event)  # every kind of call answered

    async def issuing(self, replica: Replica, request: token_pb2.IssueRequest) -> None:
        while not self.stop.is_set():
            try:
                answer = await replica.tokens.Issue(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                self.refused[exc.code()] += 1
                await asyncio.sleep(0.001)
            else:
                self.tokens.append(answer.tokens.access_token)
                if len(self.tokens) >= 40:
                    self.warm.set()


async def _change(admin: admin_pb2_grpc.AdminServiceStub, action: str, client_id: str) -> str:
    """Make the change; the new secret for a rotation, else ""."""
    if action in {"rotate", "rotate-keep"}:
        request = admin_pb2.RotateClientSecretRequest(
            id=client_id, keep_tokens=action == "rotate-keep"
        )
        return (await admin.RotateClientSecret(request, metadata=ADMIN, timeout=30)).client_secret
    if action == "disable":
        disable = admin_pb2.SetClientDisabledRequest(id=client_id, disabled=True)
        await admin.SetClientDisabled(disable, metadata=ADMIN, timeout=30)
        return ""
    await admin.DeleteClient(admin_pb2.DeleteClientRequest(id=client_id), metadata=ADMIN)
    return ""


async def _round(replicas: list[Replica], action: str, name: str, index: int) -> Counter[str]:
    admin = replicas[0].admin
    client_id = f"svc-{action}-{index}-{uuid.uuid4().hex[:6]}"
    grants = [
        admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE,
    ]
    created = await admin.CreateClient(
        admin_pb2.CreateClientRequest(
            client=admin_pb2.Client(
                id=client_id, confidential=True, grant_types=grants, audiences=["default"]
            )
        ),
        metadata=ADMIN,
        timeout=30,
    )
    secret = created.client_secret
    state = Round()
    loops = [
        state.issuing(replica, _cc(client_id, secret))
        for replica in replicas
        for _ in range(ISSUERS)
    ]
    loops += [
        state.issuing(replica, _exchange(client_id, secret, name))
        for replica in replicas
        for _ in range(EXCHANGERS)
    ]
    running = [asyncio.create_task(loop) for loop in loops]
    await state.warm.wait()
    new_secret = await _change(admin, action, client_id)
    returned = time.time()
    await asyncio.sleep(0.2)  # calls that read the client before the change still answer
    state.stop.set()
    await asyncio.gather(*running)

    verdicts: Counter[str] = Counter()
    for replica_index, replica in enumerate(replicas):
        for token in state.tokens:
            verdict = await replica.verdict(token)
            verdicts[verdict] += 1
            if action == "rotate-keep":
                assert verdict == "VERIFY_RESULT_VALID", (action, verdict, replica_index)
                assert _issued_at(token) <= returned, (
                    "a call with the old secret got a token minted after the rotation returned"
                )
                continue
            assert verdict == "VERIFY_RESULT_REVOKED", (
                f"{action}: a token received by a call in flight is {verdict}"
                f" on replica {replica_index}"
            )
    assert set(state.refused) <= REFUSED, (action, state.refused)

    fresh = ""
    if action == "disable":
        enable = admin_pb2.SetClientDisabledRequest(id=client_id, disabled=False)
        await admin.SetClientDisabled(enable, metadata=ADMIN, timeout=30)
        fresh = secret
    elif action in {"rotate", "rotate-keep"}:
        fresh = new_secret
    if fresh:  # valid at once, on every replica, with nothing waiting
        for replica in replicas:
            answer = await replica.tokens.Issue(_cc(client_id, fresh), timeout=30)
            for checker in replicas:
                assert await checker.verdict(answer.tokens.access_token) == "VERIFY_RESULT_VALID"
            exchanged = await replica.tokens.Issue(_exchange(client_id, fresh, name), timeout=30)
            for checker in replicas:
                verdict = await checker.verdict(exchanged.tokens.access_token)
                assert verdict == "VERIFY_RESULT_VALID"
    return verdicts


async def _attack(servers: list[ServerProcess], action: str) -> None:
    replicas = [Replica(grpc.aio.insecure_channel(s.target)) for s in servers]
    try:
        name = f"u-{action}-{uuid.uuid4().hex[:6]}"
        await replicas[0].admin.CreatePrincipal(
            admin_pb2.CreatePrincipalRequest(name=name, password=PASSWORD),
            metadata=ADMIN,
            timeout=30,
        )
        total: Counter[str] = Counter()
        for index in range(ROUNDS):
            total += await _round(replicas, action, name, index)
        print(f"{action} on {len(servers)} replica(s): {dict(total)}")
    finally:
        for replica in replicas:
            await replica.channel.close()


def _issued_at(token: str) -> float:
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iat"])


@pytest.mark.parametrize("action", ["disable", "delete", "rotate", "rotate-keep"])
def test_no_token_minted_for_a_changed_client_stays_valid(
    servers: list[ServerProcess], action: str
) -> None:
    asyncio.run(_attack(servers, action))
