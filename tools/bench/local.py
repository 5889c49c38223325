"""Client-side decoding cost, as a ratio of the raw Ed25519 verification it cannot avoid.

Every variant checks the same token with the same key in the same process; the
variants take turns within each round (in a rotating order), so a noisy neighbour
slows them alike and the per-round ratio to raw stays meaningful.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authority.crypto import generate_private_key, public_jwk
from authority.domain.keys import Algorithm
from authority.domain.tokens import Verification, check_claims
from authority.tokens.jws import SigningKey, VerificationKey, b64url_decode, sign, verify_signature

ISSUER = "http://127.0.0.1:8080"
AUDIENCE = "default"
LEEWAY = 30.0
MAX_TOKEN_BYTES = 8192
# Calls between two clock reads: the loop's own overhead stays far below one verification.
BATCH = 50


@dataclass(frozen=True)
class Variant:
    name: str
    verify: Callable[[], bool]


@dataclass(frozen=True)
class VariantResult:
    name: str
    ops_per_second: float  # median over rounds
    ratio_to_raw: float  # median of the per-round ratios
    failures: int


def sample_token() -> tuple[str, Ed25519PrivateKey, str]:
    """A real access token with the claim shape of ``TokenIssuer.mint``."""
    private_key = generate_private_key(Algorithm.EDDSA)
    assert isinstance(private_key, Ed25519PrivateKey)
    kid = public_jwk(private_key, Algorithm.EDDSA)["kid"]
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "p_" + secrets.token_urlsafe(16),
        "aud": AUDIENCE,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_urlsafe(16),
        "sid": "s_" + secrets.token_urlsafe(16),
        "client_id": "bench",
    }
    return sign(claims, SigningKey(kid, Algorithm.EDDSA, private_key)), private_key, kid


def variants() -> list[Variant]:
    """The four ways to check one token; each returns True only for a valid verdict."""
    token, private_key, kid = sample_token()
    public_key = private_key.public_key()
    header_segment, payload_segment, signature_segment = token.split(".")
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    signature = b64url_decode(signature_segment)
    keys_by_kid = {kid: public_key}
    ring = {kid: VerificationKey(kid, Algorithm.EDDSA, public_key)}
    audiences = frozenset({AUDIENCE})

    def raw() -> bool:
        try:
            public_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    def pyjwt() -> bool:
        try:
            jwt.decode(token, public_key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
        except jwt.PyJWTError:
            return False
        return True

    def pyjwt_jwks() -> bool:
        try:
            key = keys_by_kid.get(jwt.get_unverified_header(token).get("kid", ""))
            if key is None:
                return False
            jwt.decode(token, key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
        except jwt.PyJWTError:
            return False
        return True

    def ours() -> bool:
        checked = verify_signature(token, ring, max_bytes=MAX_TOKEN_BYTES)
        if isinstance(checked, Verification):
            return False
        verdict = check_claims(
            checked, issuer=ISSUER, audiences=audiences, now=time.time(), leeway=LEEWAY
        )
        return verdict.valid

    return [
        Variant("raw Ed25519 verify (cryptography)", raw),
        Variant("PyJWT decode, key given", pyjwt),
        Variant("PyJWT by kid: header + decode", pyjwt_jwks),
        Variant("ours: verify_signature + check_claims", ours),
    ]


def _time_box(verify: Callable[[], bool], seconds: float) -> tuple[float, int]:
    """(ops/s, failures) for ``verify`` run in batches until ``seconds`` have passed."""
    done = failures = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            if not verify():
                failures += 1
        done += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), failures


def run(rounds: int, seconds: float) -> list[VariantResult]:
    """Interleave the variants in ``rounds`` rounds of ``seconds`` each; raw comes first."""
    candidates = variants()
    ops: dict[str, list[float]] = {v.name: [] for v in candidates}
    failures = dict.fromkeys(ops, 0)
    for variant in candidates:  # a valid token must verify before anything is timed
        if not variant.verify():
            failures[variant.name] += 1
    for round_index in range(rounds):
        shift = round_index % len(candidates)
        for variant in candidates[shift:] + candidates[:shift]:
            rate, failed = _time_box(variant.verify, seconds)
            ops[variant.name].append(rate)
            failures[variant.name] += failed
    raw = ops[candidates[0].name]
    return [
        VariantResult(
            name=name,
            ops_per_second=statistics.median(rates),
            ratio_to_raw=statistics.median(r / b for r, b in zip(rates, raw, strict=True)),
            failures=failures[name],
        )
        for name, rates in ops.items()
    ]
