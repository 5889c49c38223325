"""Part 5 of ``make bench``: the client library.

(a) Local verification with ``LocalVerifier`` (keys from a static JWKS, no revocation
check) as a ratio of raw ``cryptography`` Ed25519 verification, for never-seen tokens
(cache miss) and a repeated one (cache hit), in process, interleaved in rounds (in a
rotating order). Rates are per second of this thread's CPU time: all three run in this one
thread, and on a shared machine wall time also counts the intervals another process had
the core, which fall on the variants unevenly.
(b) How long a revocation takes to reach a client following ``WatchRevocations``:
from Revoke returning until the watcher's view says revoked.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from authority_client import LocalVerifier, StaticJwksSource, WatchedRevocations

from authority.crypto import generate_private_key, public_jwk
from authority.domain.keys import Algorithm
from authority.tokens.jws import SigningKey, sign
from authority.v1 import admin_pb2, admin_pb2_grpc, token_pb2, token_pb2_grpc
from tools.bench.processes import BENCH_ADMIN_TOKEN, Served

ISSUER = "https://bench.example.test"


@dataclass(frozen=True)
class LocalResult:
    raw: float  # ops/s
    miss: float
    hit: float


@dataclass(frozen=True)
class WatchResult:
    lags: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def _local(rounds: int, seconds: float) -> LocalResult:
    key = generate_private_key(Algorithm.EDDSA)
    jwk = public_jwk(key, Algorithm.EDDSA)
    signer = SigningKey(jwk["kid"], Algorithm.EDDSA, key)
    now = int(time.time())

    def token(i: int) -> str:
        claims = {"iss": ISSUER, "sub": "p_bench", "aud": "default", "exp": now + 3600,
                  "iat": now, "nbf": now, "jti": f"{i:022d}", "sid": "s_bench"}  # fmt: skip
        return sign(claims, signer)

    # Never-seen tokens for every miss: sized above the fastest miss rate seen (libsodium's
    # check); a phase also ends early rather than reuse one.
    pool = [token(i) for i in range(int(30_000 * seconds * rounds) + 100)]
    verifier = LocalVerifier(
        StaticJwksSource({"keys": [jwk]}), issuer=ISSUER, audience="default", cache_size=100_000
    )
    await verifier.start()
    public = key.public_key()
    head, body, signature = pool[-1].split(".")
    message, raw_signature = f"{head}.{body}".encode(), _b64(signature)
    repeated = pool[-1]
    assert (await verifier.verify(repeated)).valid
    used = 0
    rates: dict[str, list[float]] = {"raw": [], "miss": [], "hit": []}
    order = list(rates)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for name in order[shift:] + order[:shift]:
            measured = rates[name]
            done, started = 0, time.thread_time()
            while time.thread_time() - started < seconds and used + 100 <= len(pool):
                for _ in range(100):
                    if name == "raw":
                        public.verify(raw_signature, message)  # type: ignore[call-arg]
                    elif name == "hit":
                        await verifier.verify(repeated)
                    else:
                        if not (await verifier.verify(pool[used])).valid:
                            raise RuntimeError("a fresh token did not verify")
                        used += 1
                done += 100
            measured.append(done / (time.thread_time() - started))
    await verifier.aclose()
    return LocalResult(*(statistics.median(rates[n]) for n in ("raw", "miss", "hit")))


async def _watch(target: str, revocations: int) -> WatchResult:
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        created = await admin.CreateClient(
            admin_pb2.CreateClientRequest(
                client=admin_pb2.Client(
                    id="bench-watch",
                    confidential=True,
                    grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                    audiences=["default"],
                )
            ),
            metadata=(("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),),
        )
        grant = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id="bench-watch", client_secret=created.client_secret
            )
        )
        issued = [(await tokens.Issue(grant)).tokens.access_token for _ in range(revocations)]
        # Reading revocations needs a credential: the bench's admin credential is one.
        watcher = WatchedRevocations(
            target, metadata=(("authorization", f"Bearer {BENCH_ADMIN_TOKEN}"),)
        )
        reader = LocalVerifier.for_authority(
            target, issuer=ISSUER, audience="default", revocations="none"
        )
        await watcher.wait_synced()
        lags: list[float] = []
        try:
            for token in issued:
                verdict = await reader.verify(token)
                claims = verdict.claims
                if claims is None:
                    raise RuntimeError(f"a bench token did not verify: {verdict.detail}")
                await tokens.Revoke(token_pb2.RevokeRequest(access_token=token))
                returned = time.perf_counter()
                while not await watcher.is_revoked(claims):
                    if time.perf_counter() - returned > 5:
                        raise RuntimeError("the watcher never saw a revocation")
                    await asyncio.sleep(0.0002)
                lags.append(time.perf_counter() - returned)
        finally:
            await watcher.aclose()
            await reader.aclose()
    return WatchResult(lags)


def run_local(rounds: int, seconds: float) -> LocalResult:
    return asyncio.run(_local(rounds, seconds))


def run_watch(revocations: int) -> WatchResult:
    with tempfile.TemporaryDirectory(prefix="authority-bench-watch-") as workdir:
        served = Served(Path(workdir) / "data", {"AUTHORITY_ISSUER": ISSUER}).wait_ready()
        try:
            return asyncio.run(_watch(served.target, revocations))
        finally:
            served.stop()


def print_client_report(local: LocalResult, watch: WatchResult) -> None:
    print(f"  {'variant':<44} {'ops/s':>9} {'vs raw':>7}")
    for name, rate in (
        ("raw Ed25519 verify (cryptography)", local.raw),
        ("LocalVerifier.verify, never-seen token", local.miss),
        ("LocalVerifier.verify, repeated token (cache)", local.hit),
    ):
        print(f"  {name:<44} {rate:>9,.0f} {rate / local.raw:>6.2f}x")
    print("  targets: miss >= 0.85x raw, cached repeat >= 10x raw")
    ms = [lag * 1000 for lag in watch.lags]
    print(
        f"  revocation reaching a WatchRevocations follower, {len(ms):,} revocations:"
        f" p50 {watch.quantile(0.5) * 1000:.1f} ms, p99 {watch.quantile(0.99) * 1000:.1f} ms,"
        f" max {max(ms):.1f} ms"
    )
