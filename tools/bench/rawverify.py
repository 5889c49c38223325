"""The raw Ed25519 verify that part 1's cache-miss cost is counted in, measured like the server.

The server's cost is CPU time on its pinned core, so the reference is too: the load
generator's thread moves to that core between phases (the server idles then) and times
``cryptography``'s verify of a real access token by its own CPU clock. Wall-clock rates
measured elsewhere (part 2) grow with whatever else the shared machine runs, which would
flatter the ratio. The reference is ``cryptography``'s (OpenSSL's) verify, as the issue
defines it, even though the server itself checks Ed25519 with libsodium.
"""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authority.tokens.jws import b64url_decode
from tools.bench.local import sample_token

BATCH = 50


def _reference() -> tuple[Ed25519PublicKey, bytes, bytes]:
    token, private_key, _ = sample_token()
    signing_input, _, signature_segment = token.rpartition(".")
    signature = b64url_decode(signature_segment)
    return private_key.public_key(), signature, signing_input.encode("ascii")


def raw_verify_cpu_us(cpus: str | None, seconds: float) -> float:
    """CPU microseconds of one raw Ed25519 verify on ``cpus`` (the server's; None: where
    this thread runs), the median of five slices of ``seconds`` / 5."""
    public_key, signature, message = _reference()
    own = os.sched_getaffinity(0)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        public_key.verify(signature, message)  # warm, and a wrong reference fails here
        slices = []
        for _ in range(5):
            done, start = 0, time.thread_time()
            deadline = start + seconds / 5
            while True:
                for _ in range(BATCH):
                    public_key.verify(signature, message)
                done += BATCH
                now = time.thread_time()
                if now >= deadline:
                    slices.append((now - start) / done * 1e6)
                    break
    finally:
        os.sched_setaffinity(0, own)
    return sorted(slices)[len(slices) // 2]
