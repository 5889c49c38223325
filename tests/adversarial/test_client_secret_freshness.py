"""A client's credentials are judged on the stored row of the moment, on every call.

Client-credentials Issue reads the client row on every call; concurrent calls may share
one read (issue 13), but only a read that starts after each of them arrived. These
attacks keep a flood of Issue calls in flight on every replica while an admin rotates
the secret, disables the client or deletes it, and check, on real server processes:

- every call sent after the admin call returned is refused, on every replica (the old
  secret was being accepted, read after read, until a moment before);
- the new secret works at once after a rotation;
- a wrong secret, and an unknown client, are refused while the right secret is being
  accepted at full speed next to them, and the right secret never fails.

Runs on the embedded SQLite default and on two PostgreSQL + Redis replicas.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
FLOOD = 12  # Issue calls in flight per replica
AFTER = 60  # calls each replica must have sent after the change returned
LIMITS = {
    # Every call comes from one address and failures are the point: no throttling here.
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000000",
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "100000000",
}
Code = grpc.StatusCode
REFUSED = {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED}


@dataclass
class Replicas:
    servers: list[ServerProcess]


@pytest.fixture(params=["sqlite", "postgres+redis"])
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> Iterator[Replicas]:
    start = start_server
    if request.param == "sqlite":
        yield Replicas([start(tmp_path / "data", **LIMITS)])
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
        yield Replicas([start(tmp_path / name, **env) for name in ("a", "b")])


def _grant(client_id: str, secret: str) -> token_pb2.IssueRequest:
    return token_pb2.IssueRequest(
        client_credentials=token_pb2.ClientCredentialsGrant(
            client_id=client_id, client_secret=secret
        )
    )


async def _outcome(stub: token_pb2_grpc.TokenServiceStub, request: token_pb2.IssueRequest) -> Code:
    try:
        await stub.Issue(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


@dataclass
class Flood:
    """Issue calls with one request, ``FLOOD`` in flight, each outcome kept with whether
    it was sent after ``changed`` was set."""

    stub: token_pb2_grpc.TokenServiceStub
    request: token_pb2.IssueRequest
    changed: asyncio.Event
    before: list[Code] = field(default_factory=list)
    after: list[Code] = field(default_factory=list)
    warm: asyncio.Event = field(default_factory=asyncio.Event)  # FLOOD answers seen

    async def run(self) -> None:
        async def one() -> None:
            while len(self.after) < AFTER:
                late = self.changed.is_set()
                code = await _outcome(self.stub, self.request)
                (self.after if late else self.before).append(code)
                if len(self.before) >= FLOOD:
                    self.warm.set()

        await asyncio.gather(*(one() for _ in range(FLOOD)))


async def _create(admin: admin_pb2_grpc.AdminServiceStub, client_id: str) -> str:
    created = await admin.CreateClient(
        admin_pb2.CreateClientRequest(
            client=admin_pb2.Client(
                id=client_id,
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
            )
        ),
        metadata=ADMIN,
        timeout=30,
    )
    return created.client_secret


async def _change(admin: admin_pb2_grpc.AdminServiceStub, action: str, client_id: str) -> str:
    """Make the change; the new secret for a rotation, else ""."""
    if action == "rotate":
        rotated = await admin.RotateClientSecret(
            admin_pb2.RotateClientSecretRequest(id=client_id), metadata=ADMIN, timeout=30
        )
        return rotated.client_secret
    if action == "disable":
        await admin.SetClientDisabled(
            admin_pb2.SetClientDisabledRequest(id=client_id, disabled=True),
            metadata=ADMIN,
            timeout=30,
        )
        return ""
    await admin.DeleteClient(
        admin_pb2.DeleteClientRequest(id=client_id), metadata=ADMIN, timeout=30
    )
    return ""


async def _refused_after(servers: list[ServerProcess], action: str) -> None:
    channels = [grpc.aio.insecure_channel(s.target) for s in servers]
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channels[0])
        stubs = [token_pb2_grpc.TokenServiceStub(c) for c in channels]
        client_id = f"svc-{action}-{uuid.uuid4().hex[:6]}"
        secret = await _create(admin, client_id)
        request = _grant(client_id, secret)
        for stub in stubs:  # accepted, read after read, on every replica
            assert await _outcome(stub, request) is Code.OK
        changed = asyncio.Event()
        floods = [Flood(stub, request, changed) for stub in stubs]
        running = [asyncio.create_task(f.run()) for f in floods]
        await asyncio.gather(*(f.warm.wait() for f in floods))
        new_secret = await _change(admin, action, client_id)
        changed.set()
        await asyncio.gather(*running)
        for index, flood in enumerate(floods):
            accepted = [c for c in flood.after if c is Code.OK]
            assert not accepted, f"{action}: replica {index} accepted the old credentials"
            assert set(flood.after) <= REFUSED, (action, index, set(flood.after))
            assert Code.OK in flood.before, (action, index, set(flood.before))
        if new_secret:
            for stub in stubs:
                assert await _outcome(stub, _grant(client_id, new_secret)) is Code.OK
                assert await _outcome(stub, request) is Code.UNAUTHENTICATED
    finally:
        for channel in channels:
            await channel.close()


@pytest.mark.parametrize("action", ["rotate", "disable", "delete"])
def test_a_changed_client_is_refused_as_soon_as_the_admin_call_returns(
    replicas: Replicas, action: str
) -> None:
    asyncio.run(_refused_after(replicas.servers, action))


async def _wrong_next_to_right(servers: list[ServerProcess]) -> None:
    channels = [grpc.aio.insecure_channel(s.target) for s in servers]
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channels[0])
        client_id = f"svc-{uuid.uuid4().hex[:6]}"
        secret = await _create(admin, client_id)
        other = await _create(admin, f"other-{uuid.uuid4().hex[:6]}")
        wrong = [
            _grant(client_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")),
            _grant(client_id, secret + "x"),
            _grant(client_id, secret.upper()),
            _grant(client_id, other),  # another client's valid secret
            _grant(client_id, "cs_" + "A" * 43),
            _grant(f"nobody-{uuid.uuid4().hex[:6]}", secret),  # unknown client, a real secret
        ]
        right = _grant(client_id, secret)
        deadline = time.monotonic() + 3.0
        outcomes: dict[str, list[Code]] = {"right": [], "wrong": []}

        async def hammer(stub: token_pb2_grpc.TokenServiceStub, index: int) -> None:
            turn = index
            while time.monotonic() < deadline:
                turn += 1
                if turn % 3:
                    outcomes["right"].append(await _outcome(stub, right))
                else:
                    outcomes["wrong"].append(await _outcome(stub, wrong[turn % len(wrong)]))

        stubs = [token_pb2_grpc.TokenServiceStub(c) for c in channels]
        await asyncio.gather(*(hammer(s, i) for s in stubs for i in range(FLOOD)))
        assert outcomes["right"] and set(outcomes["right"]) == {Code.OK}, set(outcomes["right"])
        assert len(outcomes["wrong"]) >= len(wrong)
        assert set(outcomes["wrong"]) == {Code.UNAUTHENTICATED}, set(outcomes["wrong"])
    finally:
        for channel in channels:
            await channel.close()


def test_a_wrong_secret_is_refused_while_the_right_one_is_accepted(replicas: Replicas) -> None:
    asyncio.run(_wrong_next_to_right(replicas.servers))
