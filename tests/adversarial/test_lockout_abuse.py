"""Adversarial: nobody can lock a victim out, and distributed guessing stays bounded.

Against real server processes. Sources are real: the server sees each client's TCP peer
address, and ``SourceRelay`` makes a connection leave from a chosen loopback address
(127.0.0.2, 127.0.0.3, ... are all local on Linux), so different "machines" talk to
the same server without any mock. IPv6 runs over ``::1`` against a dual-stack listener.

Numbers are printed as ``lockout:`` lines (``pytest -rP``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from authority_client import AuthorityClient

from tests import services
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
OK = grpc.StatusCode.OK
LOCKED = grpc.StatusCode.RESOURCE_EXHAUSTED
WRONG_PASSWORD = grpc.StatusCode.UNAUTHENTICATED

StartServer = Callable[..., ServerProcess]


def report(what: str, **facts: Any) -> None:
    print(f"lockout: {what} " + json.dumps(facts, sort_keys=True, default=str))


class SourceRelay:
    """A TCP relay on 127.0.0.1 whose connections to the server leave from ``source``.

    The kernel, not the relay, sets the address the server sees: each upstream socket is
    bound to ``source`` before it connects. Threads pump bytes both ways until either
    side closes; ``close`` stops everything.
    """

    def __init__(self, server_port: int, source: str) -> None:
        self.source = source
        self._server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.bind((self.source, 0))
            upstream.connect(("127.0.0.1", self._server_port))
            self._sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(reader: socket.socket, writer: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := reader.recv(65536):
                writer.sendall(data)
        with contextlib.suppress(OSError):
            writer.shutdown(socket.SHUT_WR)

    def client(self) -> AuthorityClient:
        return AuthorityClient(f"127.0.0.1:{self.port}", admin_token=ADMIN_TOKEN)

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def from_source(server: ServerProcess, source: str) -> Iterator[AuthorityClient]:
    """A client whose calls reach ``server`` from the address ``source``."""
    relay = SourceRelay(server.grpc_port, source)
    try:
        with relay.client() as client:
            yield client
    finally:
        relay.close()


def login(client: AuthorityClient, name: str, password: str) -> grpc.StatusCode:
    try:
        client.issue_with_password(name, password)
    except grpc.RpcError as error:
        return error.code()
    return OK


def backend_env(kind: str) -> dict[str, str]:
    """The embedded limits, or the Redis ones (shared Redis, a prefix of this test's own)."""
    if kind == "embedded":
        return {}
    return {
        "AUTHORITY_REDIS_URL": services.redis_url(),
        "AUTHORITY_REDIS_PREFIX": f"t-{uuid.uuid4().hex}",
    }


# -- one source cannot lock the owner out elsewhere --------------------------------------


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_an_attacker_refailing_every_lock_cannot_keep_the_owner_out(
    start_server: StartServer, tmp_path: Path, backend: str
) -> None:
    # Short locks, so the attacker re-fails as each one expires many times in the test.
    server = start_server(
        tmp_path / "data",
        AUTHORITY_LOCKOUT_BASE="1s",
        AUTHORITY_LOCKOUT_MAX="2s",
        AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE="60",
        **backend_env(backend),
    )
    with server.client() as admin:
        admin.create_principal("victim", PASSWORD)
    variants = ["victim", "VICTIM", "Victim", "vIcTiM"]
    attacker_codes: list[grpc.StatusCode] = []
    stop = threading.Event()

    def attack() -> None:
        with from_source(server, "127.0.0.2") as attacker:
            i = 0
            while not stop.is_set():
                attacker_codes.append(login(attacker, variants[i % len(variants)], WRONG))
                i += 1
                time.sleep(0.02)

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    victim_codes: list[grpc.StatusCode] = []
    try:
        with from_source(server, "127.0.0.3") as victim:
            time.sleep(1.0)  # the attacker's first lock is in place
            for _ in range(30):
                victim_codes.append(login(victim, "victim", PASSWORD))
                time.sleep(0.4)
    finally:
        stop.set()
        thread.join(30)
    admitted = victim_codes.count(OK)
    report(
        f"single-source attack ({backend})",
        victim_admitted=admitted,
        victim_tried=len(victim_codes),
        attacker_wrong_password_checks=attacker_codes.count(WRONG_PASSWORD),
        attacker_refused=attacker_codes.count(LOCKED),
    )
    # The attack was real: the attacker was locked, and failed again after locks expired.
    assert attacker_codes.count(LOCKED) > 0
    assert attacker_codes.count(WRONG_PASSWORD) > 5
    assert admitted == len(victim_codes) == 30, victim_codes


# -- many sources: bounded by the principal's limit, the owner's usual source still in ----


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_distributed_guessing_is_bounded_and_the_owners_known_source_still_gets_in(
    start_server: StartServer, tmp_path: Path, backend: str
) -> None:
    per_minute = 2  # the per-principal limit, and its burst
    server = start_server(
        tmp_path / "data",
        AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE=str(per_minute),
        **backend_env(backend),
    )
    with server.client() as admin:
        admin.create_principal("victim", PASSWORD)
    sources = [f"127.0.1.{i}" for i in range(1, 21)]
    guesses = refused = 0
    owner: list[grpc.StatusCode] = []
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(from_source(server, "127.0.0.3"))
        assert login(home, "victim", PASSWORD) is OK  # the owner's usual source
        started = time.monotonic()
        attackers = [stack.enter_context(from_source(server, s)) for s in sources]
        for _ in range(3):  # rounds over twenty sources, each below its own lockout
            for attacker in attackers:
                code = login(attacker, "victim", WRONG)
                assert code in (WRONG_PASSWORD, LOCKED), code
                guesses += code is WRONG_PASSWORD
                refused += code is LOCKED
            owner.append(login(home, "victim", PASSWORD))
        new_place = stack.enter_context(from_source(server, "127.0.0.4"))
        for attacker in attackers:  # spend what refilled meanwhile, then try from elsewhere
            code = login(attacker, "victim", WRONG)
            guesses += code is WRONG_PASSWORD
            refused += code is LOCKED
        fresh = login(new_place, "victim", PASSWORD)
        elapsed = time.monotonic() - started
    # The principal's bucket: its burst plus what refilled meanwhile (the owner's first
    # login took one token too).
    bound = per_minute + per_minute * elapsed / 60
    report(
        f"distributed attack ({backend})",
        sources=len(sources),
        attempts=guesses + refused,
        wrong_password_checks=guesses,
        bound=round(bound, 2),
        seconds=round(elapsed, 2),
        owner_known_source=[c.name for c in owner],
        owner_new_source=fresh.name,
    )
    assert guesses <= bound
    assert owner == [OK, OK, OK]
    # The trade-off: while the attack spends the principal's budget, a source the owner
    # never logged in from waits like any other.
    assert fresh is LOCKED


# -- IPv6: keyed by /64, IPv4-mapped as IPv4 ---------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_sources_are_keyed_by_their_64_and_lock_only_themselves(
    start_server: StartServer, tmp_path: Path
) -> None:
    env = backend_env("redis")
    prefix = env["AUTHORITY_REDIS_PREFIX"]
    server = start_server(tmp_path / "data", AUTHORITY_GRPC_ADDRESS="[::]:0", **env)
    v6 = AuthorityClient(f"[::1]:{server.grpc_port}", admin_token=ADMIN_TOKEN)
    v4 = AuthorityClient(f"127.0.0.1:{server.grpc_port}", admin_token=ADMIN_TOKEN)
    with v6, v4, redis.Redis.from_url(services.redis_url()) as plain:
        v4.create_principal("victim", PASSWORD)
        codes = [login(v6, "victim", WRONG) for _ in range(5)]
        assert codes == [WRONG_PASSWORD] * 5
        assert login(v6, "victim", PASSWORD) is LOCKED  # ::1 is locked ...
        assert login(v4, "victim", PASSWORD) is OK  # ... 127.0.0.1 is not
        keys = sorted(k.decode() for k in plain.scan_iter(match=f"{prefix}:attempt:*"))
    report("ipv6 keys", keys=[k.removeprefix(prefix) for k in keys])
    # One key for the whole ::/64, none for the address itself; the IPv4 client (seen
    # through a dual-stack listener) is keyed by its plain IPv4 address.
    assert f"{prefix}:attempt:lock:victim\x1f::/64" in keys
    assert f"{prefix}:attempt:src:::/64" in keys
    assert f"{prefix}:attempt:src:127.0.0.1" in keys
    assert not [k for k in keys if "::1" in k or "ffff" in k or "ipv" in k]
