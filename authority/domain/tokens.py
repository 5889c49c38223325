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
