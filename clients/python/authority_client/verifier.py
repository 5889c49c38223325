"""Local verification of access tokens, with the authority's verdicts and reason names.

The checks are the authority's own: both run the JOSE core (``authority.jose``, shipped
with this library), so a backend that verifies locally rejects the same tokens for the
same reasons, in the same order: size, three
segments, strict and canonical base64url (one token, one string), a JSON header, ``alg``
in the allow-list, ``typ`` at+jwt, no ``crit``, the key by ``kid`` from the published set
(refetched at most once), the header's ``alg`` equal to the key's (the header is never
trusted to choose), a low-S ES256 signature (the authority signs no other), the
signature, the claims' shape, then time, issuer, audience and revocation.

A bounded cache of signature-checked tokens skips only parsing and the signature: the key
must still be published, and time, issuer, audience and revocation are checked on every
hit. A never-seen token under a header already proven good skips the header's parsing
(``authority_client.seen_headers``); any other token takes the core's whole path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeAlias, TypeVar

from authority.jose.cache import BoundedCache
from authority.jose.claims import (
    ACCESS_TOKEN_TYPE,
    REGISTERED_CLAIMS,
    Claims,
    VerifyReason,
    check_claims,
    parse_claims,
)
from authority.jose.claims import Verification as _Verdict
from authority.jose.jws import UNPUBLISHED_KEY, b64url_decode, parse_compact, verify_signature
from authority.v1 import token_pb2
from authority_client.credentials import TokenProvider
from authority_client.jwks import (
    SUPPORTED_ALGORITHMS,
    GrpcJwksSource,
    JwksCache,
    JwksSource,
    PublicJwk,
)
from authority_client.revocation import (
    CallbackRevocations,
    RevocationChecker,
    WatchedRevocations,
)
from authority_client.seen_headers import SeenHeaders

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "REGISTERED_CLAIMS",
    "Claims",
    "LocalVerifier",
    "SyncLocalVerifier",
    "Verification",
    "VerifyResult",
    "b64url_decode",
    "parse_claims",
]

VerifyResult: TypeAlias = token_pb2.VerifyResult.ValueType

VALID = token_pb2.VERIFY_RESULT_VALID
MALFORMED = token_pb2.VERIFY_RESULT_MALFORMED
TOO_LARGE = token_pb2.VERIFY_RESULT_TOO_LARGE
DISALLOWED_ALGORITHM = token_pb2.VERIFY_RESULT_DISALLOWED_ALGORITHM
UNKNOWN_KEY = token_pb2.VERIFY_RESULT_UNKNOWN_KEY
BAD_SIGNATURE = token_pb2.VERIFY_RESULT_BAD_SIGNATURE
EXPIRED = token_pb2.VERIFY_RESULT_EXPIRED
NOT_YET_VALID = token_pb2.VERIFY_RESULT_NOT_YET_VALID
WRONG_ISSUER = token_pb2.VERIFY_RESULT_WRONG_ISSUER
WRONG_AUDIENCE = token_pb2.VERIFY_RESULT_WRONG_AUDIENCE
REVOKED = token_pb2.VERIFY_RESULT_REVOKED
WRONG_TYPE = token_pb2.VERIFY_RESULT_WRONG_TYPE

# The core's reasons as the contract's VerifyResult values, by name (every reason has one).
_RESULT: dict[VerifyReason, VerifyResult] = {
    reason: token_pb2.VerifyResult.Value(f"VERIFY_RESULT_{reason.name}") for reason in VerifyReason
}
_T = TypeVar("_T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verification:
    """A verdict: ``reason`` is an ``authority.v1.VerifyResult`` value, ``detail`` is safe to
    show the token's holder, ``claims`` is set only when valid."""

    reason: VerifyResult
    detail: str = ""
    claims: Claims | None = None

    @property
    def valid(self) -> bool:
        return self.reason == VALID and self.claims is not None

    @property
    def reason_name(self) -> str:
        """``VERIFY_RESULT_...``, the name the authority's ``Verify`` answers with."""
        return token_pb2.VerifyResult.Name(self.reason)


def _answer(verdict: _Verdict) -> Verification:
    """The core's verdict in the contract's terms."""
    return Verification(_RESULT[verdict.reason], verdict.detail, verdict.claims)


def _audiences(audience: str | Iterable[str] | None) -> frozenset[str]:
    if audience is None:
        return frozenset()
    if isinstance(audience, str):
        return frozenset({audience})
    return frozenset(audience)


# Verification(VALID, "", claims) on the hot path: a frozen dataclass's __init__ sets each
# field through object.__setattr__; the slots' own descriptors do the same in half the time.
_new = object.__new__
_set_reason, _set_detail, _set_claims = (
    getattr(Verification, name).__set__ for name in ("reason", "detail", "claims")
)


def _valid(claims: Claims) -> Verification:
    verdict: Verification = _new(Verification)
    _set_reason(verdict, VALID)
    _set_detail(verdict, "")
    _set_claims(verdict, claims)
    return verdict


# A signature-checked token: its claims and its key's algorithm. A plain tuple: built for
# free by the check that returns it, where a frozen dataclass costs a microsecond.
_Cached: TypeAlias = tuple[Claims, str]


class LocalVerifier:
    """Verifies access tokens in-process against the published keys; never raises for a token.

    ``audience`` is what ``verify`` accepts when the caller names none (the authority's
    default audience is a server setting the client cannot see, so it is required here).
    ``revocations`` is a ``CallbackRevocations``, a ``WatchedRevocations`` or ``None`` (no
    revocation checks: signatures and expiry only). ``fast_path=False`` runs the JOSE
    core's whole path for every never-seen token (the verdicts are the same; tests compare).
    """

    def __init__(
        self,
        jwks: JwksCache | JwksSource | str,
        *,
        issuer: str,
        audience: str | Iterable[str],
        revocations: RevocationChecker | None = None,
        algorithms: Iterable[str] = SUPPORTED_ALGORITHMS,
        leeway: float = 30.0,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        now: Callable[[], float] = time.time,
        fast_path: bool = True,
    ) -> None:
        self.jwks = jwks if isinstance(jwks, JwksCache) else JwksCache(jwks)
        if not issuer:
            raise ValueError("issuer is required")
        self.issuer = issuer
        self.audiences = _audiences(audience)
        if not self.audiences:
            raise ValueError("at least one audience is required")
        self.algorithms = frozenset(algorithms)
        unsupported = self.algorithms - set(SUPPORTED_ALGORITHMS)
        if unsupported or not self.algorithms:
            raise ValueError(f"algorithms must be among {SUPPORTED_ALGORITHMS}: {unsupported}")
        self.revocations = revocations
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.cache_size = max(1, cache_size)
        self._now = now
        self._cache: BoundedCache[str, _Cached] = BoundedCache(self.cache_size)
        self._seen = SeenHeaders(max_token_bytes) if fast_path else None

    @classmethod
    def for_authority(
        cls,
        authority: str,
        *,
        issuer: str,
        audience: str | Iterable[str],
        jwks_url: str | None = None,
        revocations: Literal["callback", "watch", "none"] = "callback",
        credential: TokenProvider | None = None,
        fail_open: bool = False,
        **options: Any,
    ) -> LocalVerifier:
        """The usual wiring: keys over HTTP (or gRPC ``GetJwks`` without ``jwks_url``) and
        revocations from the authority at gRPC ``authority``, read with ``credential`` (a
        ``ClientCredentialsTokens`` whose client may have the scope
        ``authority:revocations.read``); required unless ``revocations="none"``."""
        source: JwksSource | str = jwks_url if jwks_url else GrpcJwksSource(authority)
        checker: RevocationChecker | None
        if revocations != "none" and credential is None:
            raise ValueError(
                "the revocation API needs a credential: pass credential=ClientCredentialsTokens("
                "authority, client_id, client_secret) (scope authority:revocations.read)"
            )
        if revocations == "callback":
            checker = CallbackRevocations(authority, fail_open=fail_open, credential=credential)
        elif revocations == "watch":
            checker = WatchedRevocations(
                authority,
                credential=credential,
                fallback=CallbackRevocations(authority, fail_open=fail_open, credential=credential),
            )
        else:
            checker = None
        return cls(source, issuer=issuer, audience=audience, revocations=checker, **options)

    async def start(self) -> None:
        """Prefetch the keys and start following revocations (both also happen lazily)."""
        await self.jwks.keys()
        if self.revocations is not None:
            await self.revocations.start()

    async def aclose(self) -> None:
        if self.revocations is not None:
            await self.revocations.aclose()
        await self.jwks.aclose()

    async def __aenter__(self) -> LocalVerifier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def cached(self) -> int:
        return len(self._cache)

    async def verify(self, token: str, audience: str | Iterable[str] | None = None) -> Verification:
        """The verdict on ``token`` for ``audience`` (default: the constructor's)."""
        if not isinstance(token, str):
            return Verification(MALFORMED, "the token is not a string")
        keys = self.jwks.fresh()
        if keys is None:
            keys = await self.jwks.keys()
        now = self._now()
        cached = self._cache.get(token)
        if cached is None or not self._still_published(cached, keys):
            if cached is not None:  # its key left the key set
                del self._cache[token]
            checked = self._fast_path(token, keys)
            if checked is None:
                checked = await self._verify_signature(token)
            if isinstance(checked, Verification):
                return checked
            cached = checked
            if now < cached[0].expires_at + self.leeway:
                self._cache[token] = cached
        claims = cached[0]
        audiences = self.audiences if audience is None else _audiences(audience) or self.audiences
        leeway = self.leeway
        # check_claims's VALID condition, spelled as the negation of its rejections; any
        # other outcome asks check_claims itself for the reason and its detail.
        if (
            not now >= claims.expires_at + leeway
            and not (now + leeway < claims.not_before or now + leeway < claims.issued_at)
            and claims.issuer == self.issuer
            and not audiences.isdisjoint(claims.audience)
        ):
            if self.revocations is None:
                return _valid(claims)
            return await self._unless_revoked(claims)
        verdict = check_claims(
            claims, issuer=self.issuer, audiences=audiences, now=now, leeway=leeway
        )
        if verdict.reason is VerifyReason.EXPIRED:
            self._cache.pop(token, None)
        return _answer(verdict)

    async def _unless_revoked(self, claims: Claims) -> Verification:
        """The valid answer unless the revocation source says otherwise (or fails)."""
        assert self.revocations is not None
        try:
            status = await self.revocations.check(claims)
        except Exception as exc:  # a bug in a revocation source must not let tokens in
            log.exception("revocation check failed")
            return Verification(REVOKED, f"the revocation state is unknown ({type(exc).__name__})")
        if status.revoked:
            return Verification(REVOKED, status.detail or "the token has been revoked")
        return _valid(claims)

    @staticmethod
    def _still_published(cached: _Cached, keys: Mapping[str, PublicJwk]) -> bool:
        claims, algorithm = cached
        key = keys.get(claims.key_id)
        return key is not None and key.algorithm == algorithm

    def _fast_path(
        self, token: str, keys: Mapping[str, PublicJwk]
    ) -> _Cached | Verification | None:
        """A token under a seen header, checked without awaiting; ``None``: ask the core."""
        if self._seen is None:
            return None
        fast = self._seen.verify(token, keys)
        if fast is None or isinstance(fast, tuple):
            return fast
        return _answer(fast)

    async def _verify_signature(self, token: str) -> _Cached | Verification:
        """The JOSE core's two steps around the key lookup (which may refetch the keys)."""
        jws = parse_compact(token, max_bytes=self.max_token_bytes, algorithms=self.algorithms)
        if isinstance(jws, _Verdict):
            return _answer(jws)
        key = await self.jwks.get(jws.kid)
        if key is None:
            detail = UNPUBLISHED_KEY.detail
            if not self.jwks.loaded:
                detail += " (the key set could not be fetched)"
            return Verification(UNKNOWN_KEY, detail)
        checked = verify_signature(jws, key.algorithm, key.key)
        if isinstance(checked, _Verdict):
            return _answer(checked)
        if self._seen is not None:
            self._seen.remember(token, key)
        return checked, key.algorithm


class SyncLocalVerifier:
    """A ``LocalVerifier`` for synchronous code (a sync gRPC server, a WSGI app).

    It runs one event loop in a daemon thread and submits every call to it, rather than
    ``asyncio.run`` per call: the JWKS single-flight, the revocation batcher and the
    revocation stream all live on one loop (grpc.aio channels and asyncio futures belong to
    the loop that made them), the batcher needs calls from many threads to meet on one
    loop to be batched at all, and the watch stream must keep running between calls.
    """

    def __init__(self, verifier: LocalVerifier, *, timeout: float = 30.0) -> None:
        self.verifier = verifier
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="authority-verifier", daemon=True
        )
        self._thread.start()
        self._closed = False

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("SyncLocalVerifier called from its own event loop")
        if self._closed:
            coroutine.close()
            raise RuntimeError("SyncLocalVerifier is closed")
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def start(self) -> None:
        self._call(self.verifier.start())

    def verify(self, token: str, audience: str | Iterable[str] | None = None) -> Verification:
        """The verdict, as ``LocalVerifier.verify``; raises TimeoutError after ``timeout``."""
        return self._call(self.verifier.verify(token, audience))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._call(self.verifier.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> SyncLocalVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
