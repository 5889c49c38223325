"""Access-token claims and verdicts (RFC 9068): no cryptography, safe for a pure core."""

from authority.jose._rfc9068 import (
    ACCESS_TOKEN_TYPE,
    REGISTERED_CLAIMS,
    Claims,
    ClaimsError,
    Verification,
    VerifyReason,
    check_claims,
    parse_claims,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "REGISTERED_CLAIMS",
    "Claims",
    "ClaimsError",
    "Verification",
    "VerifyReason",
    "check_claims",
    "parse_claims",
]
