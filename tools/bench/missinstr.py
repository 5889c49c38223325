"""Instructions per cache-miss Verify, in process, for callgrind (deterministic, unlike time).

Mints ``--tokens`` EdDSA tokens with the claim shape of the bench server's, then answers
``calls`` of them as Verify does (``verify``, ``verify_response``,
``verify_response_bytes``): fresh tokens for ``miss``, one repeated token for ``hit``.
Run it twice under callgrind, with ``calls`` 0 and N; the difference over N is the cost
per call with minting and start-up cancelled out::

    for n in 0 1000; do valgrind --tool=callgrind --callgrind-out-file=/tmp/mi.$n \\
        .venv/bin/python -m tools.bench.missinstr $n; done   # then (Ir_1000 - Ir_0) / 1000
"""

from __future__ import annotations

import argparse
import secrets
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority.api.convert import verify_response, verify_response_bytes
from authority.crypto import generate_private_key, public_jwk
from authority.domain.clock import SystemClock
from authority.domain.keys import Algorithm
from authority.domain.revocation import RevocationSet
from authority.tokens.jws import SigningKey, VerificationKey, sign
from authority.tokens.verifier import TokenVerifier

ISSUER = "http://127.0.0.1:44693"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.missinstr", description=__doc__)
    parser.add_argument("calls", type=int, help="Verify calls to answer (0: the baseline)")
    parser.add_argument("--hit", action="store_true", help="repeat one token (cache hits)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens to mint")
    args = parser.parse_args(argv)
    private_key = generate_private_key(Algorithm.EDDSA)
    assert isinstance(private_key, Ed25519PrivateKey)
    kid = public_jwk(private_key, Algorithm.EDDSA)["kid"]
    signing = SigningKey(kid, Algorithm.EDDSA, private_key)
    ring = {kid: VerificationKey(kid, Algorithm.EDDSA, private_key.public_key())}
    now = int(time.time())
    tokens = [
        sign(
            {
                "iss": ISSUER,
                "sub": f"bench-fresh-{i}",
                "aud": "default",
                "exp": now + 600,
                "iat": now,
                "nbf": now,
                "jti": secrets.token_urlsafe(16),
                "client_id": "authority:default",
                "sid": "s_" + secrets.token_urlsafe(16),
            },
            signing,
        )
        for i in range(max(args.tokens, args.calls + 1))
    ]
    verifier = TokenVerifier(
        keys=lambda: ring,
        issuer=ISSUER,
        default_audience="default",
        leeway=30.0,
        max_token_bytes=8192,
        revocations=RevocationSet(),
        clock=SystemClock(),
    )
    verify_response_bytes(verify_response(verifier.verify(tokens[0])))  # warm, and cached
    calls = [tokens[0]] * args.calls if args.hit else tokens[1 : args.calls + 1]
    for token in calls:
        verify_response_bytes(verify_response(verifier.verify(token)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
