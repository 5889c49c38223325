"""Access-token claims and their validation, as the server's domain names them.

The one implementation lives in the JOSE core (``authority.jose.claims``, shipped by the
authority-client distribution), so the server's Verify and every local verifier type and
check claims with the same code. Pure: it imports no cryptography.
"""

from __future__ import annotations

from authority.jose.claims import (
    ACCESS_TOKEN_TYPE,
    REGISTERED_CLAIMS,
    Claims,
    ClaimsError,
    Verification,
    VerifyReason,
    check_claims,
    parse_claims,
)

AccessClaims = Claims

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "REGISTERED_CLAIMS",
    "AccessClaims",
    "ClaimsError",
    "Verification",
    "VerifyReason",
    "check_claims",
    "parse_claims",
]


def issued_at(now: float, after: float | None = None) -> float:
    """The ``iat`` of a token minted at ``now``.

    Whole seconds, as every JOSE library expects, unless a subject or client not-before
    time (a revocation, a credential change) ``after`` falls in this very second: then the
    token would be born revoked, so ``iat`` carries microseconds (RFC 7519 allows a
    fraction) and is strictly after ``after``, even when this replica's clock is behind
    the one that recorded it. Nothing has to wait out the second."""
    whole = int(now)
    if after is None or whole > after:
        return whole
    return max(int(now * 1_000_000), round(after * 1_000_000) + 1) / 1_000_000
