"""Access-token claims and verdicts (RFC 9068): no cryptography, safe for a pure core.
``lone_surrogate_in`` is the I-JSON rule (RFC 7493) the verifier holds claims to."""

from authority.jose._rfc7493 import lone_surrogate_in
from authority.jose._rfc9068 import (
    ACCESS_TOKEN_TYPE,
    REGISTERED_CLAIMS,
    Claims,
    ClaimsError,
    Verification,
    VerifyReason,
    check_claims,
    parse_claims,
    valid_verdict,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "REGISTERED_CLAIMS",
    "Claims",
    "ClaimsError",
    "Verification",
    "VerifyReason",
    "check_claims",
    "lone_surrogate_in",
    "parse_claims",
    "valid_verdict",
]
