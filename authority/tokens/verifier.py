"""Verify: signature via the key ring, then claims, then revocation, with a bounded cache.

The cache maps a token string to its signature-checked claims. A hit skips only
the signature and parsing: the key must still be published (so a compromised
key's tokens fail at once), and time, issuer, audience and revocation are
checked on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from authority.domain.clock import Clock
from authority.domain.tokens import (
    AccessClaims,
    Verification,
    VerifyReason,
    check_claims,
)
from authority.jose.cache import BoundedCache
from authority.tokens.jws import VerificationKey, verify_signature

_REVOKED = Verification(VerifyReason.REVOKED, "the token has been revoked")


class RevocationView(Protocol):
    def is_revoked(self, claims: AccessClaims) -> bool: ...


class TokenVerifier:
    def __init__(
        self,
        *,
        keys: Callable[[], Mapping[str, VerificationKey]],
        issuer: str,
        default_audience: str,
        leeway: float,
        max_token_bytes: int,
        revocations: RevocationView,
        clock: Clock,
        cache_size: int = 65536,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._default_audiences = frozenset({default_audience})
        self._leeway = leeway
        self._max_bytes = max_token_bytes
        self._revocations = revocations
        self._clock = clock
        self._cache: BoundedCache[str, AccessClaims] = BoundedCache(cache_size)

    @property
    def leeway(self) -> float:
        """Seconds past ``exp`` (and before ``nbf``) a token is still accepted."""
        return self._leeway

    def signed_claims(self, token: str) -> AccessClaims | Verification:
        """The claims of ``token`` when it carries our signature by a published key, else
        the failure; never raises. Time, issuer, audience and revocation are not checked
        here (``verify`` checks them): revoke-by-token needs exactly this step."""
        return self._signed(token, self._clock.timestamp())

    def verify(self, token: str, audiences: Iterable[str] = ()) -> Verification:
        """A verdict for ``token``; never raises for any input."""
        now = self._clock.timestamp()
        claims = self._signed(token, now)
        if isinstance(claims, Verification):
            return claims
        # A Verify without audiences (the usual case) builds no set.
        accepted = (frozenset(audiences) if audiences else None) or self._default_audiences
        verdict = check_claims(
            claims, issuer=self._issuer, audiences=accepted, now=now, leeway=self._leeway
        )
        if verdict.reason is VerifyReason.EXPIRED:
            self._cache.pop(token, None)
        if verdict.valid and self._revocations.is_revoked(claims):
            return _REVOKED
        return verdict

    def _signed(self, token: str, now: float) -> AccessClaims | Verification:
        keys = self._keys()
        claims = self._cache.get(token)
        if claims is None or claims.key_id not in keys:
            checked = verify_signature(token, keys, max_bytes=self._max_bytes)
            if isinstance(checked, Verification):
                return checked
            claims = checked
            if now < claims.expires_at + self._leeway:
                self._cache[token] = claims
        return claims

    @property
    def cached(self) -> int:
        return len(self._cache)
