"""Verify: signature via the key ring, then claims, then revocation, with a bounded cache.

The cache maps a token string to its signature-checked claims. A hit skips only
the signature and parsing: the key must still be published (so a compromised
key's tokens fail at once), and time, issuer, audience and revocation are
checked on every call.

A hit also carries what never changes for its claims (the VALID verdict, the bounds
``check_claims`` compares ``now`` with, and whether issuer and default audience match),
so a repeated valid token is answered with a few comparisons instead of a new verdict;
anything that does not pass them takes the plain path, which finds the reason.
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
from authority.jose.claims import valid_verdict
from authority.tokens.jws import VerificationKey, verify_signature

_REVOKED = Verification(VerifyReason.REVOKED, "the token has been revoked")
_VALID = VerifyReason.VALID
_EXPIRED = VerifyReason.EXPIRED

# A cache entry: (claims, their VALID verdict, max(nbf, iat): ``now + leeway`` must not be
# below it, exp + leeway: ``now`` must be below it, whether the issuer is ours, whether
# it is and the default audiences match). Exactly ``check_claims``'s comparisons.
_Entry = tuple[AccessClaims, Verification, float, float, bool, bool]


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
        self._cache: BoundedCache[str, _Entry] = BoundedCache(cache_size)

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
        entry = self._cache.get(token)
        if entry is not None:
            # A repeated token: check_claims's comparisons against what its entry keeps,
            # then the key and revocation checks. Any failure: the plain path below.
            claims, valid, starts, ends, issuer_ok, default_audience_ok = entry
            if (
                now < ends
                and not now + self._leeway < starts
                and (
                    default_audience_ok
                    if not audiences
                    else issuer_ok and not frozenset(audiences).isdisjoint(claims.audience)
                )
                and claims.key_id in self._keys()
                and not self._revocations.is_revoked(claims)
            ):
                return valid
            signed = self._signed(token, now)
        else:
            # A token never seen (or evicted): its signature once, then the entry a hit
            # would find and the hit's own comparisons (its key was just found in the
            # ring), so a valid one costs no ``check_claims`` verdict and no second entry
            # lookup. Anything that does not pass: the plain path below finds the reason.
            signed = verify_signature(token, self._keys(), max_bytes=self._max_bytes)
            if not isinstance(signed, Verification) and now < signed.expires_at + self._leeway:
                entry = self._cache[token] = self._entry(signed)
                if audiences:  # once: the plain path reads them again
                    audiences = frozenset(audiences)
                if (
                    not now + self._leeway < entry[2]
                    and (
                        entry[5]
                        if not audiences
                        else entry[4] and not frozenset(audiences).isdisjoint(signed.audience)
                    )
                    and not self._revocations.is_revoked(signed)
                ):
                    return entry[1]
        if isinstance(signed, Verification):
            return signed
        # A Verify without audiences (the usual case) builds no set.
        accepted = (frozenset(audiences) if audiences else None) or self._default_audiences
        verdict = check_claims(
            signed, issuer=self._issuer, audiences=accepted, now=now, leeway=self._leeway
        )
        if verdict.reason is _EXPIRED:
            self._cache.pop(token, None)
        if verdict.reason is _VALID:
            if self._revocations.is_revoked(signed):
                return _REVOKED
            cached = self._cache.get(token)
            if cached is not None and cached[0] is signed:
                return cached[1]  # the one VALID verdict of these claims
        return verdict

    def _signed(self, token: str, now: float) -> AccessClaims | Verification:
        keys = self._keys()
        entry = self._cache.get(token)
        if entry is not None and entry[0].key_id in keys:
            return entry[0]
        checked = verify_signature(token, keys, max_bytes=self._max_bytes)
        if isinstance(checked, Verification):
            return checked
        if now < checked.expires_at + self._leeway:
            self._cache[token] = self._entry(checked)
        return checked

    def _entry(self, claims: AccessClaims) -> _Entry:
        issuer_ok = claims.issuer == self._issuer
        return (
            claims,
            valid_verdict(claims),
            max(claims.not_before, claims.issued_at),
            claims.expires_at + self._leeway,
            issuer_ok,
            issuer_ok and not self._default_audiences.isdisjoint(claims.audience),
        )

    @property
    def cached(self) -> int:
        return len(self._cache)
