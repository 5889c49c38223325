"""Ed25519 verify and sign: OpenSSL (``cryptography``) against libsodium (PyNaCl), side by side.

One real access token, one key, one process; the four operations take turns within each
round (rotating order) and are timed by this thread's CPU clock, so a noisy neighbour
slows them alike. Prints the median CPU microseconds per call and libsodium's ratio.

    python -m tools.bench.ed25519 [--rounds 15] [--calls 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from authority.crypto.ed25519 import Ed25519Signer
from authority.jose.jws import verify_ed25519
from authority.tokens.jws import b64url_decode
from tools.bench.local import sample_token


def operations() -> dict[str, Callable[[], object]]:
    """The four timed calls, each checked once for the right answer first."""
    token, private_key, _ = sample_token()
    signing_input, _, segment = token.rpartition(".")
    message, signature = signing_input.encode("ascii"), b64url_decode(segment)
    public_key = private_key.public_key()
    public = public_key.public_bytes_raw()
    signer = Ed25519Signer(private_key)
    assert signer.sign(message) == private_key.sign(message) == signature
    assert verify_ed25519(public, message, signature)
    public_key.verify(signature, message)
    return {
        "verify cryptography": lambda: public_key.verify(signature, message),
        "verify libsodium": lambda: verify_ed25519(public, message, signature),
        "sign cryptography": lambda: private_key.sign(message),
        "sign libsodium": lambda: signer.sign(message),
    }


def run(rounds: int, calls: int) -> dict[str, float]:
    """Median CPU microseconds per call of each operation."""
    ops = operations()
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            call = ops[name]
            started = time.thread_time()
            for _ in range(calls):
                call()
            samples[name].append((time.thread_time() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    result = run(args.rounds, args.calls)
    for name, us in result.items():
        print(f"  {name:<22} {us:8.1f} us CPU per call")
    for what in ("verify", "sign"):
        ratio = result[f"{what} libsodium"] / result[f"{what} cryptography"]
        print(f"  {what}: libsodium / cryptography = {ratio:.2f}x CPU")


if __name__ == "__main__":
    main()
