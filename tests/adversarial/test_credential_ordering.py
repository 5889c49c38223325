"""Credential changes are linearizable with logins (issue 9, item 1), attacked on real servers.

Many password logins (and token exchanges) are in flight while an admin changes the
principal's password, disables it, deletes it or revokes its subject ("log out
everywhere"). The change's start is placed at a random point of the logins' window each
round, so the change lands before, between and after the logins' reads, password checks,
mints and inserts. Once the change is acknowledged:

- nothing any login with the old credential obtained verifies VALID or refreshes (the
  change ends every session by default, including those of logins still in flight);
- a later login with the old password fails; one with the new password succeeds, and its
  token is VALID at once (no token born revoked, no wait);
- after a subject revocation, every pair answered before the revocation was sent is dead,
  and a later login is VALID at once.

The interleavings tried are counted and printed (``-s`` shows them); a run must overlap
enough logins with the change to mean something. Runs on the embedded SQLite default and
on PostgreSQL + Redis. ``AUTHORITY_TEST_ORDERING_ROUNDS`` sets the rounds per action.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import grpc
import pytest

from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

ROUNDS = int(os.environ.get("AUTHORITY_TEST_ORDERING_ROUNDS", "10"))
LOGINS = 6  # password logins in flight per round
EXCHANGES = 2  # token exchanges in flight per round
WINDOW = 0.12  # seconds over which the logins and the change start
OLD = "old correct horse battery"
NEW = "new correct horse battery"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
ACTIONS = ("set_password", "disable", "delete", "revoke_subject")
LIMITS = {
    # Every attempt here comes from one address, and the old password is tried on purpose
    # after each change: the abuse controls would otherwise answer RESOURCE_EXHAUSTED.
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "1000000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "1000000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "1000000",
}


@dataclass
class Attempt:
    kind: str  # "login" or "exchange"
    started: float
    finished: float = 0.0
    pair: token_pb2.TokenPair | None = None
    code: grpc.StatusCode | None = None


@dataclass
class Tally:
    rounds: int = 0
    attempts: int = 0
    overlapping: int = 0  # in flight while the change was in flight
    outcomes: Counter[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.outcomes = Counter()


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.tokens = token_pb2_grpc.TokenServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    async def login(self, name: str, password: str) -> token_pb2.TokenPair:
        request = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal=name, password=password)
        )
        return (await self.tokens.Issue(request, timeout=30)).tokens

    async def exchange(self, client_id: str, secret: str, name: str) -> token_pb2.TokenPair:
        grant = token_pb2.TokenExchangeGrant(
            client_id=client_id, client_secret=secret, subject=name
        )
        request = token_pb2.IssueRequest(token_exchange=grant)
        return (await self.tokens.Issue(request, timeout=30)).tokens

    async def valid(self, access_token: str) -> bool:
        verdict = await self.tokens.Verify(token_pb2.VerifyRequest(token=access_token), timeout=30)
        return verdict.result == token_pb2.VERIFY_RESULT_VALID

    async def refreshes(self, refresh_token: str) -> bool:
        if not refresh_token:
            return False
        try:
            await self.tokens.Refresh(token_pb2.RefreshRequest(refresh_token=refresh_token))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
            return False
        return True

    async def change(self, action: str, name: str, principal_id: str) -> None:
        if action == "set_password":
            # No flag: revoking every session is the default (NIST SP 800-63B, OWASP).
            request = admin_pb2.SetPasswordRequest(name=name, password=NEW)
            await self.admin.SetPassword(request, metadata=ADMIN, timeout=30)
        elif action == "disable":
            request_d = admin_pb2.SetPrincipalDisabledRequest(name=name, disabled=True)
            await self.admin.SetPrincipalDisabled(request_d, metadata=ADMIN, timeout=30)
        elif action == "delete":
            request_x = admin_pb2.DeletePrincipalRequest(name=name)
            await self.admin.DeletePrincipal(request_x, metadata=ADMIN, timeout=30)
        else:
            request_r = token_pb2.RevokeRequest(subject=principal_id)
            await self.tokens.Revoke(request_r, metadata=ADMIN, timeout=30)


async def timed(attempt: Attempt, delay: float, call: Callable[[], object]) -> Attempt:
    await asyncio.sleep(delay)
    attempt.started = time.monotonic()
    try:
        attempt.pair = await call()  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        attempt.code = exc.code()
    attempt.finished = time.monotonic()
    return attempt


async def one_round(
    stubs: Stubs, action: str, index: int, rng: random.Random, client: tuple[str, str]
) -> tuple[list[str], list[Attempt], float, float]:
    """One interleaving; returns the problems found, the attempts and the change's span."""
    name = f"u{index}-{action}-{uuid.uuid4().hex[:6]}"
    created = await stubs.admin.CreatePrincipal(
        admin_pb2.CreatePrincipalRequest(name=name, password=OLD), metadata=ADMIN, timeout=30
    )
    principal_id = created.principal.id
    before = Attempt("login", time.monotonic())
    before.pair = await stubs.login(name, OLD)
    before.finished = time.monotonic()

    attempts = [Attempt("login", 0.0) for _ in range(LOGINS)]
    attempts += [Attempt("exchange", 0.0) for _ in range(EXCHANGES)]
    calls: list[Callable[[], object]] = [
        (lambda: stubs.login(name, OLD))
        if a.kind == "login"
        else (lambda: stubs.exchange(client[0], client[1], name))
        for a in attempts
    ]
    change_delay = rng.uniform(0, WINDOW)
    span: list[float] = []

    async def change() -> None:
        await asyncio.sleep(change_delay)
        span.append(time.monotonic())
        await stubs.change(action, name, principal_id)
        span.append(time.monotonic())

    await asyncio.gather(
        change(),
        *(timed(a, rng.uniform(0, WINDOW), call) for a, call in zip(attempts, calls, strict=True)),
    )
    sent, acknowledged = span
    problems: list[str] = []
    everything = [before, *attempts]
    for attempt in everything:
        if attempt.pair is None:
            continue
        strict = action != "revoke_subject" or attempt.finished <= sent
        if action == "set_password" and attempt.kind == "exchange" and attempt.finished > sent:
            # An exchange does not use the password: one concurrent with the change may be
            # ordered after it, and then its token is rightly valid.
            strict = False
        if not strict:
            continue
        after = attempt.finished - sent
        where = f"{action}: a {attempt.kind} answered {after:+.3f}s after the change was sent"
        if await stubs.valid(attempt.pair.access_token):
            problems.append(f"{where} still has a VALID access token")
        if await stubs.refreshes(attempt.pair.refresh_token):
            problems.append(f"{where} still has a refreshable session")

    # Later logins: the old password is dead; the new one (or a login after "log out
    # everywhere") works at once, with a token that is VALID straight away.
    if action in ("set_password", "disable", "delete"):
        try:
            await stubs.login(name, OLD)
            problems.append(f"{action}: a later login with the old password succeeded")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                problems.append(f"{action}: a later old-password login answered {exc.code()}")
    fresh_password = {"set_password": NEW, "revoke_subject": OLD}.get(action)
    if fresh_password is not None:
        fresh = await stubs.login(name, fresh_password)
        if not await stubs.valid(fresh.access_token):
            problems.append(f"{action}: a login after the change got a token that is not VALID")
        if not await stubs.refreshes(fresh.refresh_token):
            problems.append(f"{action}: a login after the change got a dead session")
    return problems, everything, sent, acknowledged


async def attack(server: ServerProcess, label: str) -> Tally:
    rng = random.Random(f"{label}-{os.getpid()}-{time.time()}")
    tally = Tally()
    problems: list[str] = []
    async with grpc.aio.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        created = await stubs.admin.CreateClient(
            admin_pb2.CreateClientRequest(
                client=admin_pb2.Client(
                    id=f"exchanger-{uuid.uuid4().hex[:6]}",
                    confidential=True,
                    grant_types=[admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE],
                    audiences=["default"],
                )
            ),
            metadata=ADMIN,
            timeout=30,
        )
        client = (created.client.id, created.client_secret)
        for index in range(ROUNDS):
            for action in ACTIONS:
                found, attempts, sent, acknowledged = await one_round(
                    stubs, action, index, rng, client
                )
                problems += found
                tally.rounds += 1
                for attempt in attempts[1:]:
                    tally.attempts += 1
                    overlapping = attempt.started < acknowledged and attempt.finished > sent
                    tally.overlapping += overlapping
                    outcome = "pair" if attempt.pair is not None else str(attempt.code)
                    tally.outcomes[
                        f"{action}/{attempt.kind}/{'overlap' if overlapping else 'apart'}/{outcome}"
                    ] += 1
    print(
        f"\n[{label}] {tally.rounds} rounds, {tally.attempts} logins/exchanges,"
        f" {tally.overlapping} in flight while the change was; outcomes:"
    )
    for key, count in sorted(tally.outcomes.items()):
        print(f"  {key}: {count}")
    assert not problems, f"{len(problems)} problems, e.g.:\n" + "\n".join(problems[:15])
    # Enough logins really overlapped the change for the run to mean something.
    assert tally.overlapping >= tally.rounds, tally
    return tally


@pytest.fixture
def postgres_redis_env() -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        yield {
            "AUTHORITY_DATABASE_URL": stack.enter_context(services.fresh_database()),
            "AUTHORITY_REDIS_URL": services.redis_url(),
            "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
        }


async def test_credential_changes_are_ordered_with_logins_on_sqlite(
    start_server: Callable[..., ServerProcess],
) -> None:
    await attack(start_server(**LIMITS), "sqlite")


async def test_credential_changes_are_ordered_with_logins_on_postgres_and_redis(
    start_server: Callable[..., ServerProcess], postgres_redis_env: dict[str, str]
) -> None:
    await attack(start_server(**LIMITS, **postgres_redis_env), "postgres+redis")
