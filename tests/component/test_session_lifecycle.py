"""The refresh-session lifecycle end to end in process: the real password grant, refresh
service, token revoker, TokenVerifier and RevocationService over a real SQLite store,
with a manual clock.

A hypothesis state machine drives logins, refreshes, retries, concurrent refreshes,
reuse, revocations, principal disabling, pruning and the passage of time against a
small model of the rules in ``authority.domain.sessions``; plain examples below it
spell out the named scenarios one by one, so a failure there reads clearly.

Credential changes (password change with or without keeping the sessions, disabling,
"log out everywhere") also race logins caught in flight: a login that has read the
principal and checked the password, but not yet stored its session, is held while the
change runs, then let go. It must fail, store nothing and leave nothing valid; a login
after the change is valid at once (no clock moves, no waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from authority.crypto import Kek, KekRing
from authority.domain.clock import ManualClock
from authority.domain.errors import Unauthenticated, Unavailable
from authority.domain.keys import KeyPolicy
from authority.domain.password_policy import PasswordPolicy
from authority.domain.principals import Principal
from authority.domain.revocation import RevocationKind, RevocationSet
from authority.domain.throttle import AttemptGuard
from authority.domain.tokens import VerifyReason
from authority.keys.manager import KeyManager
from authority.ports.attempts import LocalAttemptGate
from authority.services.clients import ClientService, default_client
from authority.services.grants import PasswordGrant
from authority.services.minter import TokenMinter, TokenPair
from authority.services.passwords import HashParameters, PasswordHasher
from authority.services.principals import PrincipalService
from authority.services.refresh import RefreshService
from authority.services.revocations import RevocationService
from authority.services.token_revocation import TokenRevoker
from authority.store.base import RefreshStep
from authority.store.facets.sessions import Sessions
from authority.store.sqlite import SqliteStore
from authority.tokens.verifier import TokenVerifier

T = TypeVar("T")

ACCESS_TTL = timedelta(seconds=60)
GRACE = timedelta(seconds=10)
IDLE_TTL = timedelta(seconds=300)
ABSOLUTE_TTL = timedelta(seconds=900)
LEEWAY = timedelta(seconds=5)
US = timedelta(microseconds=1)

ISSUER = "https://authority.test"
AUDIENCE = "api"
PRINCIPAL_ID = "p_alice"
NAME = "alice"
PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "a different horse battery"
KEK = KekRing(Kek.from_secret(b"k" * 32))
CHEAP_ARGON2 = HashParameters(time_cost=1, memory_kib=1024, parallelism=1)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def micros(instant: datetime) -> int:
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // US


class HeldStore(SqliteStore):
    """The real SQLite store, able to hold a session insert at its start: a login caught
    after it read the principal and checked the password, before its transaction."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold: asyncio.Event | None = None
        self.reached = asyncio.Event()

    async def create_session(self, *args: Any, **kwargs: Any) -> bool:
        if self.hold is not None:
            self.reached.set()
            await self.hold.wait()
        return await super().create_session(*args, **kwargs)


class ReferenceStore(HeldStore):
    """The same store with SQLite's one-trip refresh off: the reference path (a read, the
    decision on the event loop, then ``consume_refresh``). Every test runs on both."""

    async def consume_refresh_with(self, token_hash: bytes, step: RefreshStep[T]) -> T | None:
        return await Sessions.consume_refresh_with(self, token_hash, step)


class Harness:
    """The services wired as ``authority.app`` wires them, minus the network."""

    def __init__(self, directory: Path, store: type[HeldStore] = HeldStore) -> None:
        self.path = directory / "authority.db"
        self.clock = ManualClock()
        self.store = store(self.path)
        self.hasher = PasswordHasher(CHEAP_ARGON2, workers=2)
        self.view = RevocationSet()

    async def open(self) -> None:
        await self.store.open()
        self.keys = KeyManager(
            store=self.store,
            kek=KEK,
            policy=KeyPolicy(
                rotation_period=timedelta(days=14),
                prepublish=timedelta(hours=1),
                max_token_ttl=ACCESS_TTL,
                leeway=LEEWAY,
            ),
            clock=self.clock,
            jwks_max_age=timedelta(minutes=10),
            check_interval=timedelta(minutes=1),
        )
        await self.keys.start()
        self.verifier = TokenVerifier(
            keys=lambda: self.keys.snapshot().verification_keys,
            issuer=ISSUER,
            default_audience=AUDIENCE,
            leeway=LEEWAY.total_seconds(),
            max_token_bytes=8192,
            revocations=self.view,
            clock=self.clock,
        )
        self.revocations = RevocationService(
            store=self.store,
            view=self.view,
            clock=self.clock,
            max_access_ttl=ACCESS_TTL,
            leeway=LEEWAY,
            grace=GRACE,
        )
        await self.revocations.load()
        clients = ClientService(
            store=self.store,
            clock=self.clock,
            default_client=default_client(
                audience=AUDIENCE,
                access_ttl_seconds=ACCESS_TTL.total_seconds(),
                idle_ttl_seconds=IDLE_TTL.total_seconds(),
                absolute_ttl_seconds=ABSOLUTE_TTL.total_seconds(),
            ),
            revocations=self.revocations,
            max_access_ttl_seconds=ACCESS_TTL.total_seconds(),
        )
        self.clients = clients
        self.minter = TokenMinter(
            store=self.store,
            keys=self.keys,
            view=self.view,
            clock=self.clock,
            issuer=ISSUER,
            leeway=LEEWAY,
        )
        self.password_grant = PasswordGrant(
            minter=self.minter,
            store=self.store,
            hasher=self.hasher,
            clients=clients,
            gate=LocalAttemptGate(
                AttemptGuard(
                    principal_per_minute=1e6,
                    principal_burst=1_000_000,
                    source_per_minute=1e6,
                    source_burst=1_000_000,
                    lockout_threshold=1_000_000,
                )
            ),
            clock=self.clock,
        )
        self.refresher = RefreshService(
            minter=self.minter,
            store=self.store,
            clients=clients,
            revocations=self.revocations,
            clock=self.clock,
            grace=GRACE,  # sanity check: set this to timedelta(0) and the retry rule fails
        )
        self.token_revocations = TokenRevoker(
            store=self.store,
            verifier=self.verifier,
            revocations=self.revocations,
            clock=self.clock,
        )
        self.principals = PrincipalService(
            store=self.store,
            hasher=self.hasher,
            clock=self.clock,
            policy=PasswordPolicy(),
            revocations=self.revocations,
        )
        await self.store.create_principal(
            Principal(
                id=PRINCIPAL_ID,
                name=NAME,
                password_hash=await self.hasher.hash(PASSWORD),
                disabled=False,
                created_at=self.clock.now(),
            )
        )

    async def close(self) -> None:
        await self.store.close()
        self.hasher.close()

    async def login(self, password: str = PASSWORD) -> TokenPair:
        return await self.password_grant.issue(NAME, password)

    async def login_held_across(self, change: Coroutine[Any, Any, object], password: str) -> None:
        """Start a login, hold it once it has checked the password and minted its tokens
        (just before its session insert), run ``change`` to completion, then let it go."""
        self.store.hold, self.store.reached = asyncio.Event(), asyncio.Event()
        login = asyncio.ensure_future(self.login(password))
        try:
            await self.store.reached.wait()
            await change
        finally:
            self.store.hold.set()
            self.store.hold = None
        with pytest.raises(Unauthenticated):
            await login

    async def set_disabled(self, disabled: bool) -> None:
        await self.store.update_principal(PRINCIPAL_ID, disabled=disabled)

    async def prune(self) -> None:
        """One pass of ``RevocationService.run``'s loop body, at the clock's now."""
        now = self.clock.now()
        self.view.expire(now.timestamp())
        await self.store.prune(now, sealed_before=now - GRACE)


def check_pair(
    h: Harness, pair: TokenPair, *, minted_at: datetime, absolute_expires_at: datetime
) -> None:
    """What every fresh answer must satisfy: its access token verifies, names the session
    and the principal, and both expiries follow the client's policy."""
    verdict = h.verifier.verify(pair.access_token)
    assert verdict.reason is VerifyReason.VALID, verdict
    assert verdict.claims is not None
    assert verdict.claims.session_id == pair.session_id
    assert verdict.claims.subject == PRINCIPAL_ID
    # Whole seconds, or (after a change or revocation in this second, perhaps this very
    # instant) to the microsecond and just after it.
    assert int(minted_at.timestamp()) <= verdict.claims.issued_at
    assert verdict.claims.issued_at <= minted_at.timestamp() + 2e-6
    assert pair.access_expires_at == verdict.claims.expires_at
    assert pair.access_expires_at == int(minted_at.timestamp()) + int(ACCESS_TTL.total_seconds())
    assert pair.audience == (AUDIENCE,)
    assert pair.refresh_token.startswith("rt_")
    assert pair.refresh_expires_at == min(minted_at + IDLE_TTL, absolute_expires_at)


async def gather(*calls: Coroutine[Any, Any, T]) -> list[T | BaseException]:
    """``asyncio.gather`` on the running loop (called outside one, it would pick another)."""
    return await asyncio.gather(*calls, return_exceptions=True)


# -- the model ----------------------------------------------------------------


class Expect(Enum):
    ROTATE = "rotate"  # a new pair, the presented token consumed
    REPLAY = "replay"  # exactly the pair the first presentation answered
    REUSE = "reuse"  # UNAUTHENTICATED, and the session is revoked
    REJECT = "reject"  # UNAUTHENTICATED, nothing changes


@dataclass
class AccessModel:
    token: str
    expires_at: int
    revoked: bool = False


@dataclass
class RefreshModel:
    pair: TokenPair  # the answer that carried this refresh token
    minted_at: datetime
    consumed_at: datetime | None = None

    @property
    def token(self) -> str:
        return self.pair.refresh_token


@dataclass
class SessionModel:
    id: str
    absolute_expires_at: datetime
    chain: list[RefreshModel] = field(default_factory=list)
    access: list[AccessModel] = field(default_factory=list)
    revoked: bool = False
    pruned: bool = False  # deleted from the store after its absolute expiry

    @property
    def head(self) -> RefreshModel:
        return self.chain[-1]

    def idle_expires_at(self) -> datetime:
        return min(self.head.minted_at + IDLE_TTL, self.absolute_expires_at)


def clock_deltas() -> st.SearchStrategy[timedelta]:
    """Often exactly on, or a microsecond past, a boundary of the policy."""
    boundaries = [
        timedelta(0),
        US,
        timedelta(seconds=1),
        GRACE,
        GRACE + US,
        ACCESS_TTL,
        ACCESS_TTL + LEEWAY,
        IDLE_TTL - US,
        IDLE_TTL,
        ABSOLUTE_TTL,
    ]
    return st.one_of(
        st.sampled_from(boundaries),
        st.integers(0, int(IDLE_TTL / US) * 2).map(lambda n: n * US),
    )


class SessionLifecycle(RuleBasedStateMachine):
    """One principal, a few sessions; the model predicts every answer."""

    MAX_LIVE_SESSIONS = 2
    MAX_SESSIONS = 6
    STORE: type[HeldStore] = HeldStore

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="session-lifecycle-"))
        self.h = Harness(self.directory, self.STORE)
        self.run(self.h.open())
        self.db = sqlite3.connect(f"file:{self.h.path}?mode=ro", uri=True)
        self.sessions: list[SessionModel] = []
        self.disabled = False
        self.password = PASSWORD

    def teardown(self) -> None:
        self.db.close()
        self.run(self.h.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @property
    def now(self) -> datetime:
        return self.h.clock.now()

    # -- the model's rules ------------------------------------------------------

    def expect(self, session: SessionModel, index: int) -> Expect:
        """What presenting ``session.chain[index]``'s token now must do."""
        if session.pruned or session.revoked:
            return Expect.REJECT
        record = session.chain[index]
        if record.consumed_at is None:
            if self.now >= session.absolute_expires_at or self.now >= session.idle_expires_at():
                return Expect.REJECT
            return Expect.REJECT if self.disabled else Expect.ROTATE
        in_grace = self.now - record.consumed_at <= GRACE
        successor_is_head = index == len(session.chain) - 2
        if in_grace and successor_is_head:
            return Expect.REJECT if self.disabled else Expect.REPLAY
        return Expect.REUSE

    def revoke_in_model(self, session: SessionModel) -> None:
        if not session.pruned:
            session.revoked = True
        for access in session.access:  # every one was issued at or before now
            access.revoked = True

    def adopt(self, session: SessionModel, pair: TokenPair, minted_at: datetime) -> None:
        check_pair(
            self.h,
            pair,
            minted_at=minted_at,
            absolute_expires_at=session.absolute_expires_at,
        )
        assert pair.session_id == session.id
        session.chain.append(RefreshModel(pair, minted_at))
        session.access.append(AccessModel(pair.access_token, pair.access_expires_at))

    def present(self, session: SessionModel, index: int, *, times: int = 1) -> Expect:
        """Present one token ``times`` times at once and check the answers against the model."""
        expected = self.expect(session, index)
        event(f"presented {'concurrently' if times > 1 else 'once'}: {expected.value}")
        record = session.chain[index]
        now = self.now
        answers = self.run(gather(*(self.h.refresher.refresh(record.token) for _ in range(times))))
        if expected in (Expect.REJECT, Expect.REUSE):
            for answer in answers:
                assert isinstance(answer, Unauthenticated), (expected, answer)
            if expected is Expect.REUSE:
                self.revoke_in_model(session)
            return expected
        for answer in answers:
            assert isinstance(answer, TokenPair), (expected, answer)
        first = answers[0]
        assert isinstance(first, TokenPair)
        assert all(answer == first for answer in answers), "concurrent answers differ"
        if expected is Expect.ROTATE:
            record.consumed_at = now
            self.adopt(session, first, now)
        else:
            assert first == session.chain[index + 1].pair, "a replay is not the same pair"
        return expected

    def pick(self, choices: list[T], n: int) -> T:
        return choices[n % len(choices)]

    def live(self) -> list[SessionModel]:
        """Sessions whose newest token would rotate (ignoring the principal's state)."""
        return [
            s
            for s in self.sessions
            if not (s.revoked or s.pruned)
            and self.now < s.absolute_expires_at
            and self.now < s.idle_expires_at()
        ]

    def retryable(self) -> list[SessionModel]:
        """Sessions whose head was issued a moment ago, by a refresh, still within grace."""
        return [
            s
            for s in self.sessions
            if not (s.revoked or s.pruned)
            and len(s.chain) >= 2
            and (consumed := s.chain[-2].consumed_at) is not None
            and self.now - consumed <= GRACE
        ]

    def reusable(self) -> list[tuple[SessionModel, int]]:
        return [(s, i) for s, i in self.consumed() if self.expect(s, i) is Expect.REUSE]

    def consumed(self) -> list[tuple[SessionModel, int]]:
        return [
            (s, i)
            for s in self.sessions
            for i, r in enumerate(s.chain)
            if r.consumed_at is not None
        ]

    # -- rules ------------------------------------------------------------------

    @precondition(
        lambda self: (
            len(self.live()) < self.MAX_LIVE_SESSIONS and len(self.sessions) < self.MAX_SESSIONS
        )
    )
    @rule()
    def login(self) -> None:
        now = self.now  # no waiting after a revocation: the clock does not move
        if self.disabled:
            with pytest.raises(Unauthenticated):
                self.run(self.h.login(self.password))
            return
        pair = self.run(self.h.login(self.password))
        assert all(pair.session_id != s.id for s in self.sessions)
        session = SessionModel(pair.session_id, absolute_expires_at=now + ABSOLUTE_TTL)
        self.adopt(session, pair, now)
        self.sessions.append(session)

    @precondition(lambda self: self.sessions)
    @rule(n=st.integers(0, 9))
    def refresh_newest(self, n: int) -> None:
        session = self.pick(self.live() or self.sessions, n)
        self.present(session, len(session.chain) - 1)

    @precondition(lambda self: self.retryable())
    @rule(n=st.integers(0, 9), fraction=st.sampled_from([0.0, 1.0]) | st.floats(0, 1))
    def retry_within_grace(self, n: int, fraction: float) -> None:
        session = self.pick(self.retryable(), n)
        consumed = session.chain[-2].consumed_at
        assert consumed is not None
        remaining = GRACE - (self.now - consumed)
        self.h.clock.advance(int(remaining / US * fraction) * US)
        outcome = self.present(session, len(session.chain) - 2)
        assert outcome is (Expect.REJECT if self.disabled else Expect.REPLAY)

    @precondition(lambda self: self.sessions)
    @rule(n=st.integers(0, 9), times=st.integers(2, 8))
    def refresh_concurrently(self, n: int, times: int) -> None:
        session = self.pick(self.live() or self.sessions, n)
        revoked = session.revoked
        self.present(session, len(session.chain) - 1, times=times)
        assert session.revoked == revoked  # never reuse, never a revocation

    @precondition(lambda self: self.consumed())
    @rule(n=st.integers(0, 99))
    def present_consumed_token(self, n: int) -> None:
        """Within grace and right behind the head: a replay; otherwise reuse."""
        session, index = self.pick(self.consumed(), n)
        self.present(session, index)

    @precondition(lambda self: self.reusable())
    @rule(n=st.integers(0, 99))
    def reuse(self, n: int) -> None:
        """A consumed token after its window (or behind a newer refresh): the session dies."""
        session, index = self.pick(self.reusable(), n)
        assert self.present(session, index) is Expect.REUSE

    @rule(delta=clock_deltas(), prune=st.booleans())
    def advance_clock(self, delta: timedelta, prune: bool) -> None:
        """Time passes, and perhaps the periodic prune runs (``RevocationService.run``)."""
        self.h.clock.advance(delta)
        if prune:
            self.run(self.h.prune())
            for session in self.sessions:
                if session.absolute_expires_at <= self.now:
                    session.pruned = True

    @precondition(lambda self: self.sessions)
    @rule(n=st.integers(0, 9), which=st.integers(0, 99), subject=st.booleans())
    def revoke(self, n: int, which: int, subject: bool) -> None:
        """The session through any token of its chain, or every session of the subject."""
        if subject:
            self.run(self.h.revocations.revoke(RevocationKind.SUBJECT, PRINCIPAL_ID))
            for session in self.sessions:
                self.revoke_in_model(session)
            return
        session = self.pick(self.sessions, n)
        index = which % len(session.chain)
        self.run(self.h.token_revocations.revoke_refresh_token(session.chain[index].token))
        if not session.pruned and not self.revoking_changes_nothing(session, index):
            self.revoke_in_model(session)

    def revoking_changes_nothing(self, session: SessionModel, index: int) -> bool:
        """The session is long over (TokenRevoker writes nothing then): past its absolute
        end, or revoked through its head token past that token's expiry, by more than an
        access token's life and the leeway, so every token it issued is dead anyway."""
        horizon = ACCESS_TTL + LEEWAY
        if self.now >= session.absolute_expires_at + horizon:
            return True
        is_head = index == len(session.chain) - 1 and session.head.consumed_at is None
        return is_head and self.now >= session.idle_expires_at() + horizon

    @precondition(lambda self: self.sessions)
    @rule(n=st.integers(0, 9), which=st.integers(0, 99))
    def revoke_access_token(self, n: int, which: int) -> None:
        session = self.pick(self.sessions, n)
        access = session.access[which % len(session.access)]
        self.run(self.h.token_revocations.revoke_access_token(access.token))
        access.revoked = True

    @precondition(lambda self: self.sessions)
    @rule(disabled=st.booleans())
    def set_principal_disabled(self, disabled: bool) -> None:
        self.run(self.h.set_disabled(disabled))
        self.disabled = disabled

    # -- credential changes, alone and racing a login in flight ------------------

    def apply_change(self, change: str) -> Coroutine[Any, Any, object]:
        """The admin's change as a coroutine; the model is updated for it at once."""
        if change in ("password", "password_keeping_sessions"):
            keep = change == "password_keeping_sessions"
            new = OTHER_PASSWORD if self.password == PASSWORD else PASSWORD
            self.password = new
            if not keep:
                for session in self.sessions:
                    self.revoke_in_model(session)
            return self.h.principals.set_password(NAME, new, keep_sessions=keep)
        for session in self.sessions:
            self.revoke_in_model(session)
        if change == "disable":
            self.disabled = True
            return self.h.principals.set_disabled(NAME, True)
        return self.h.revocations.revoke(RevocationKind.SUBJECT, PRINCIPAL_ID)

    @rule(change=st.sampled_from(["password", "password_keeping_sessions", "disable", "subject"]))
    def change_credentials(self, change: str) -> None:
        """Then the old password opens nothing, and the current one (unless disabled)
        logs in at once with a VALID token."""
        old = self.password
        self.run(self.apply_change(change))
        if self.password != old:
            with pytest.raises(Unauthenticated):
                self.run(self.h.login(old))

    @precondition(lambda self: not self.disabled and len(self.sessions) < self.MAX_SESSIONS)
    @rule(change=st.sampled_from(["password", "password_keeping_sessions", "disable", "subject"]))
    def login_in_flight_across_a_change(self, change: str) -> None:
        """A login that read the principal and checked the password before the change, and
        stores its session after it: refused, nothing stored (the invariants check the
        sessions table and every token)."""
        password = self.password
        event(f"login in flight across: {change}")
        self.run(self.h.login_held_across(self.apply_change(change), password))

    @precondition(lambda self: self.disabled)
    @rule()
    def enable_again(self) -> None:
        self.run(self.h.principals.set_disabled(NAME, False))
        self.disabled = False

    # -- invariants -------------------------------------------------------------

    @invariant()
    def one_live_refresh_token_per_session(self) -> None:
        rows = self.db.execute(
            "SELECT s.id, s.revoked_at, r.token_hash, r.consumed_at, r.expires_at"
            " FROM sessions s JOIN refresh_tokens r ON r.session_id = s.id"
        ).fetchall()
        by_session: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_session.setdefault(row[0], []).append(row)
        assert set(by_session) <= {s.id for s in self.sessions}
        now = micros(self.now)
        for session in self.sessions:
            stored = by_session.get(session.id, [])
            if session.pruned:
                assert not stored, "a pruned session is still stored"
                continue
            assert len(stored) == len(session.chain)
            unconsumed = [r for r in stored if r[3] is None]
            # Exactly one unconsumed token, the model's head: the chain never forks.
            assert [bytes(r[2]) for r in unconsumed] == [token_hash(session.head.token)]
            live = [r for r in unconsumed if r[4] > now and r[1] is None]
            assert len(live) <= 1
            assert (stored[0][1] is not None) == session.revoked

    @invariant()
    def dead_sessions_never_yield_a_token(self) -> None:
        """Revoked, pruned, expired (idle or absolute) or disabled: refusing changes nothing,
        so presenting the newest token (and, once revoked, the last consumed one) is safe."""
        for session in self.sessions:
            dead = (
                session.revoked
                or session.pruned
                or self.now >= session.absolute_expires_at
                or self.now >= session.idle_expires_at()
                or self.disabled
            )
            if not dead:
                continue
            indexes = [len(session.chain) - 1]
            if (session.revoked or session.pruned) and len(session.chain) >= 2:
                indexes.append(len(session.chain) - 2)
            for index in indexes:
                assert self.expect(session, index) is Expect.REJECT
                with pytest.raises(Unauthenticated):
                    self.run(self.h.refresher.refresh(session.chain[index].token))

    @invariant()
    def access_tokens_verify_as_modelled(self) -> None:
        """A refresh never cuts short the previous access token; revocation always does."""
        now = self.h.clock.timestamp()
        for session in self.sessions:
            for access in session.access:
                verdict = self.h.verifier.verify(access.token)
                if now >= access.expires_at + LEEWAY.total_seconds():
                    expected = VerifyReason.EXPIRED
                elif access.revoked:
                    expected = VerifyReason.REVOKED
                else:
                    expected = VerifyReason.VALID
                assert verdict.reason is expected, (verdict, session)
                if verdict.claims is not None:
                    assert verdict.claims.session_id == session.id
                    assert verdict.claims.subject == PRINCIPAL_ID


SessionLifecycle.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSessionLifecycle = SessionLifecycle.TestCase


class ReferenceSessionLifecycle(SessionLifecycle):
    """The same machine with the one-trip refresh off: the same answers."""

    STORE = ReferenceStore


ReferenceSessionLifecycle.TestCase.settings = SessionLifecycle.TestCase.settings
TestReferenceSessionLifecycle = ReferenceSessionLifecycle.TestCase


# -- the named scenarios ------------------------------------------------------


@pytest.fixture(params=[HeldStore, ReferenceStore], ids=["one-trip", "reference"])
async def h(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, request.param)
    await harness.open()
    yield harness
    await harness.close()


def query(h: Harness, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the database file directly, read-only, behind the store's back."""
    with contextlib.closing(sqlite3.connect(f"file:{h.path}?mode=ro", uri=True)) as db:
        return db.execute(sql, params).fetchall()


def stored_tokens(h: Harness, session_id: str) -> list[tuple[bytes, int | None]]:
    rows = query(
        h, "SELECT token_hash, consumed_at FROM refresh_tokens WHERE session_id = ?", session_id
    )
    return [(bytes(hash_), consumed) for hash_, consumed in rows]


def session_revoked(h: Harness, session_id: str) -> bool:
    [(revoked_at,)] = query(h, "SELECT revoked_at FROM sessions WHERE id = ?", session_id)
    return revoked_at is not None


async def test_a_retry_within_the_grace_window_returns_the_same_pair(h: Harness) -> None:
    first = await h.login()
    successor = await h.refresher.refresh(first.refresh_token)
    h.clock.advance(GRACE / 2)
    assert await h.refresher.refresh(first.refresh_token) == successor
    h.clock.advance(GRACE / 2)  # the window's last instant still counts
    assert await h.refresher.refresh(first.refresh_token) == successor
    assert h.verifier.verify(first.access_token).valid
    assert h.verifier.verify(successor.access_token).valid
    following = await h.refresher.refresh(successor.refresh_token)  # the session carries on
    assert following.session_id == first.session_id


async def test_a_refresh_that_cannot_sign_consumes_nothing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minting runs inside the store's transaction on SQLite: its failure writes nothing,
    is raised as is, and leaves the store usable."""
    first = await h.login()

    def no_key(*args: object) -> None:
        raise Unavailable("no signing key is active")

    monkeypatch.setattr(h.minter, "successor", no_key)
    with pytest.raises(Unavailable, match="no signing key"):
        await h.refresher.refresh(first.refresh_token)
    assert stored_tokens(h, first.session_id) == [(token_hash(first.refresh_token), None)]
    monkeypatch.undo()
    successor = await h.refresher.refresh(first.refresh_token)
    assert successor.session_id == first.session_id


async def test_fifty_concurrent_refreshes_of_one_token_give_one_successor(h: Harness) -> None:
    first = await h.login()
    answers = await asyncio.gather(*(h.refresher.refresh(first.refresh_token) for _ in range(50)))
    assert len(set(answers)) == 1
    successor = answers[0]
    stored = stored_tokens(h, first.session_id)
    assert len(stored) == 2
    assert [t for t, consumed in stored if consumed is None] == [
        token_hash(successor.refresh_token)
    ]
    assert not session_revoked(h, first.session_id)
    assert h.verifier.verify(first.access_token).valid
    assert h.verifier.verify(successor.access_token).valid
    assert (await h.refresher.refresh(successor.refresh_token)).session_id == first.session_id


async def test_reuse_after_the_grace_window_revokes_the_session_and_its_access_tokens(
    h: Harness,
) -> None:
    first = await h.login()
    other = await h.login()
    successor = await h.refresher.refresh(first.refresh_token)
    h.clock.advance(GRACE + US)
    with pytest.raises(Unauthenticated, match="reuse"):
        await h.refresher.refresh(first.refresh_token)
    assert session_revoked(h, first.session_id)
    with pytest.raises(Unauthenticated):
        await h.refresher.refresh(successor.refresh_token)
    assert h.verifier.verify(first.access_token).reason is VerifyReason.REVOKED
    assert h.verifier.verify(successor.access_token).reason is VerifyReason.REVOKED
    # The principal's other session is untouched.
    assert h.verifier.verify(other.access_token).valid
    assert (await h.refresher.refresh(other.refresh_token)).session_id == other.session_id


async def test_a_retry_after_the_successor_was_itself_refreshed_is_reuse(h: Harness) -> None:
    first = await h.login()
    second = await h.refresher.refresh(first.refresh_token)
    third = await h.refresher.refresh(second.refresh_token)
    with pytest.raises(Unauthenticated, match="reuse"):
        await h.refresher.refresh(first.refresh_token)  # within grace, but not behind the head
    with pytest.raises(Unauthenticated):
        await h.refresher.refresh(third.refresh_token)
    assert h.verifier.verify(third.access_token).reason is VerifyReason.REVOKED


async def test_an_idle_session_expires(h: Harness) -> None:
    first = await h.login()
    h.clock.advance(IDLE_TTL - US)
    successor = await h.refresher.refresh(first.refresh_token)
    assert successor.refresh_expires_at == h.clock.now() + IDLE_TTL
    h.clock.advance(IDLE_TTL)
    with pytest.raises(Unauthenticated, match="idle"):
        await h.refresher.refresh(successor.refresh_token)
    # Refusing changes nothing: not consumed, not revoked.
    assert not session_revoked(h, first.session_id)
    assert [c for _, c in stored_tokens(h, first.session_id)].count(None) == 1


async def test_a_session_expires_at_its_absolute_end_however_active(h: Harness) -> None:
    start = h.clock.now()
    pair = await h.login()
    while h.clock.now() + IDLE_TTL / 2 < start + ABSOLUTE_TTL:
        h.clock.advance(IDLE_TTL / 2)
        pair = await h.refresher.refresh(pair.refresh_token)
    assert pair.refresh_expires_at == start + ABSOLUTE_TTL  # capped at the absolute end
    h.clock.set(start + ABSOLUTE_TTL)
    with pytest.raises(Unauthenticated, match="expired"):
        await h.refresher.refresh(pair.refresh_token)
    assert not session_revoked(h, pair.session_id)


async def test_a_disabled_principal_cannot_refresh(h: Harness) -> None:
    first = await h.login()
    successor = await h.refresher.refresh(first.refresh_token)
    await h.set_disabled(True)
    with pytest.raises(Unauthenticated, match="disabled"):
        await h.refresher.refresh(successor.refresh_token)
    with pytest.raises(Unauthenticated, match="disabled"):
        await h.refresher.refresh(first.refresh_token)  # not even a replay within grace
    with pytest.raises(Unauthenticated):
        await h.login()
    assert not session_revoked(h, first.session_id)
    await h.set_disabled(False)  # the refusals changed nothing
    assert await h.refresher.refresh(first.refresh_token) == successor
    assert (await h.refresher.refresh(successor.refresh_token)).session_id == first.session_id


async def test_the_database_holds_no_token_in_clear(h: Harness) -> None:
    first = await h.login()
    successor = await h.refresher.refresh(first.refresh_token)
    secrets = [first.refresh_token, successor.refresh_token, successor.access_token]
    pieces = [s.encode() for s in secrets]
    pieces += [s.removeprefix("rt_").encode() for s in secrets[:2]]
    pieces += [part.encode() for part in successor.access_token.split(".")[1:]]
    [(sealed,)] = query(
        h,
        "SELECT sealed_successor FROM refresh_tokens WHERE token_hash = ?",
        token_hash(first.refresh_token),
    )
    assert sealed  # the successor is there, sealed
    files = [h.path, *h.path.parent.glob(h.path.name + "-*")]
    contents = b"".join(p.read_bytes() for p in files)
    assert token_hash(first.refresh_token) in contents  # we are reading the right bytes
    for piece in pieces:
        assert piece not in contents
    await h.store.close()  # checkpoints the WAL into the main file
    contents = h.path.read_bytes()
    assert sealed in contents
    for piece in pieces:
        assert piece not in contents


async def test_a_prune_at_the_end_of_grace_does_not_turn_a_retry_into_reuse(h: Harness) -> None:
    first = await h.login()
    successor = await h.refresher.refresh(first.refresh_token)
    h.clock.advance(GRACE)  # the window's last instant, which decide() still counts
    await h.prune()  # RevocationService.run's periodic pass happens to land here
    assert await h.refresher.refresh(first.refresh_token) == successor


async def test_revoking_an_idle_but_live_refresh_token_ends_its_session(h: Harness) -> None:
    """Found by this state machine: once every access token of a session had expired,
    revoking its still-refreshable refresh token wrote nothing, and it kept refreshing."""
    first = await h.login()
    h.clock.advance(ACCESS_TTL + LEEWAY)  # its access token is over; the session is not
    await h.token_revocations.revoke_refresh_token(first.refresh_token)
    with pytest.raises(Unauthenticated):
        await h.refresher.refresh(first.refresh_token)
