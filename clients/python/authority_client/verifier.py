"""Local verification of access tokens, with the authority's verdicts and reason names.

The checks, their order and their reasons mirror the authority's ``Verify`` exactly, so a
backend that verifies locally rejects the same tokens for the same reasons: size, three
segments, strict and canonical base64url (one token, one string), a JSON header, ``alg``
in the allow-list, ``typ`` at+jwt, no ``crit``, the key by ``kid`` from the published set
(refetched at most once), the header's ``alg`` equal to the key's (the header is never
trusted to choose), a low-S ES256 signature (the authority signs no other), the
signature, the claims' shape, then time, issuer, audience and revocation.

A bounded cache of signature-checked tokens skips only parsing and the signature: the key
must still be published, and time, issuer, audience and revocation are checked on every
hit.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeAlias, TypeVar

from jwt.algorithms import Algorithm as JwtAlgorithm
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

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

ACCESS_TOKEN_TYPE = "at+jwt"
REGISTERED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "client_id", "scope"}
)
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

_SIGNERS: dict[str, JwtAlgorithm] = {
    "EdDSA": OKPAlgorithm(),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
}
# base64url -> standard alphabet; characters foreign to base64url become '!', which
# strict mode rejects (as the authority does, in C rather than character by character).
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
# The last character of a canonical encoding, by length modulo 4: with 2 (3) characters
# in the last group, its low 4 (2) bits are unused and must be zero (RFC 4648 3.5). One
# token is one string, as for the authority (and the JWK parser).
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
# Low-S ES256: (r, s) and (r, n - s) both verify; the authority signs only the low one.
_P256_HALF_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 // 2
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_T = TypeVar("_T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a verified access token, typed (the authority's ``Claims`` message)."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    not_before: int
    token_id: str
    session_id: str
    client_id: str
    scope: tuple[str, ...]
    key_id: str
    extra: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRA)

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        """True when every one of ``scopes`` was granted."""
        return set(scopes).issubset(self.scope)


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


class _ClaimsError(ValueError):
    pass


def b64url_decode(segment: str) -> bytes:
    """Strict, canonical base64url: no padding, no foreign characters, no set bits in the
    unused tail (so exactly one string decodes to given bytes). Raises ValueError."""
    data = segment.encode("ascii")  # UnicodeEncodeError is a ValueError
    tail = _CANONICAL_LAST.get(len(data) % 4)
    if tail is not None and segment[-1] not in tail:
        raise ValueError("non-canonical base64url (unused trailing bits set)")
    padded = data.translate(_TO_STANDARD) + b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64url") from exc


def _low_s(signature: bytes) -> bool:
    """A 64-byte raw P-256 signature (r || s) with s at most n/2."""
    return len(signature) == 64 and int.from_bytes(signature[32:], "big") <= _P256_HALF_ORDER


def _string(payload: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _ClaimsError(f"claim {name!r} must be a non-empty string")
    return value


def _numeric_date(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    # bool is an int subclass; a date of `true` is malformed, not 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _ClaimsError(f"claim {name!r} must be a NumericDate")
    if not -(2**53) < value < 2**53:  # also false for NaN
        raise _ClaimsError(f"claim {name!r} is out of range")
    return int(value)


def parse_claims(payload: Any, key_id: str) -> Claims:
    """Type the JSON claims exactly as the authority does; raise ValueError on a shape error."""
    if not isinstance(payload, dict):
        raise _ClaimsError("the claims are not a JSON object")
    audience_value = payload.get("aud")
    if isinstance(audience_value, str):
        audience: tuple[str, ...] = (audience_value,)
    elif isinstance(audience_value, list) and all(isinstance(a, str) for a in audience_value):
        audience = tuple(audience_value)
    else:
        raise _ClaimsError("claim 'aud' must be a string or a list of strings")
    if not audience:
        raise _ClaimsError("claim 'aud' is empty")
    scope_value = payload.get("scope", "")
    if not isinstance(scope_value, str):
        raise _ClaimsError("claim 'scope' must be a space-separated string")
    extra = (
        _NO_EXTRA
        if payload.keys() <= REGISTERED_CLAIMS
        else MappingProxyType({k: v for k, v in payload.items() if k not in REGISTERED_CLAIMS})
    )
    return Claims(
        issuer=_string(payload, "iss"),
        subject=_string(payload, "sub"),
        audience=audience,
        expires_at=_numeric_date(payload, "exp"),
        issued_at=_numeric_date(payload, "iat"),
        not_before=_numeric_date(payload, "nbf") if "nbf" in payload else 0,
        token_id=_string(payload, "jti"),
        session_id=_string(payload, "sid", required=False),
        client_id=_string(payload, "client_id", required=False),
        scope=tuple(scope_value.split()),
        key_id=key_id,
        extra=extra,
    )


def _audiences(audience: str | Iterable[str] | None) -> frozenset[str]:
    if audience is None:
        return frozenset()
    if isinstance(audience, str):
        return frozenset({audience})
    return frozenset(audience)


@dataclass(frozen=True, slots=True)
class _Cached:
    claims: Claims
    algorithm: str


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A token that passed the checks before the key lookup."""

    kid: str
    algorithm: str
    signing_input: str
    payload_segment: str
    signature_segment: str


class LocalVerifier:
    """Verifies access tokens in-process against the published keys; never raises for a token.

    ``audience`` is what ``verify`` accepts when the caller names none (the authority's
    default audience is a server setting the client cannot see, so it is required here).
    ``revocations`` is a ``CallbackRevocations``, a ``WatchedRevocations`` or ``None`` (no
    revocation checks: signatures and expiry only).
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
        self._cache: dict[str, _Cached] = {}

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
        keys = await self.jwks.keys()
        now = self._now()
        cached = self._cache.get(token)
        claims: Claims
        if cached is not None and self._still_published(cached, keys):
            claims = cached.claims
        else:
            if cached is not None:  # its key left the key set
                del self._cache[token]
            checked = await self._verify_signature(token)
            if isinstance(checked, Verification):
                return checked
            claims = checked.claims
            if now < claims.expires_at + self.leeway:
                self._remember(token, checked)
        verdict = self._check_claims(claims, _audiences(audience) or self.audiences, now)
        if verdict.reason == EXPIRED:
            self._cache.pop(token, None)
        if verdict.valid and self.revocations is not None:
            try:
                status = await self.revocations.check(claims)
            except Exception as exc:  # a bug in a revocation source must not let tokens in
                log.exception("revocation check failed")
                return Verification(
                    REVOKED, f"the revocation state is unknown ({type(exc).__name__})"
                )
            if status.revoked:
                return Verification(REVOKED, status.detail or "the token has been revoked")
        return verdict

    @staticmethod
    def _still_published(cached: _Cached, keys: Mapping[str, PublicJwk]) -> bool:
        key = keys.get(cached.claims.key_id)
        return key is not None and key.algorithm == cached.algorithm

    def _parse(self, token: str) -> _Parsed | Verification:
        """Everything before the key lookup, in the authority's order."""
        if len(token) > self.max_token_bytes:
            return Verification(TOO_LARGE, f"the token is larger than {self.max_token_bytes} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            return Verification(MALFORMED, "not a compact JWS (three dot-separated parts)")
        header_segment, payload_segment, signature_segment = parts
        try:
            header = json.loads(b64url_decode(header_segment))
        except (ValueError, RecursionError):
            return Verification(MALFORMED, "the header is not base64url-encoded JSON")
        if not isinstance(header, dict):
            return Verification(MALFORMED, "the header is not a JSON object")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            return Verification(DISALLOWED_ALGORITHM, f"algorithm {algorithm!r} is not allowed")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            return Verification(WRONG_TYPE, "the token is not an access token (typ at+jwt)")
        if "crit" in header:
            return Verification(MALFORMED, "critical header extensions are not supported")
        kid = header.get("kid")
        if not isinstance(kid, str):
            return Verification(UNKNOWN_KEY, "the token's key id is not published")
        return _Parsed(
            kid,
            algorithm,
            token[: len(header_segment) + 1 + len(payload_segment)],
            payload_segment,
            signature_segment,
        )

    async def _verify_signature(self, token: str) -> _Cached | Verification:
        parsed = self._parse(token)
        if isinstance(parsed, Verification):
            return parsed
        key = await self.jwks.get(parsed.kid)
        if key is None:
            detail = "the token's key id is not published"
            if not self.jwks.loaded:
                detail += " (the key set could not be fetched)"
            return Verification(UNKNOWN_KEY, detail)
        if key.algorithm != parsed.algorithm:
            return Verification(
                DISALLOWED_ALGORITHM, "the token's algorithm does not match its key"
            )
        try:
            signature = b64url_decode(parsed.signature_segment)
        except ValueError:
            return Verification(MALFORMED, "the signature is not canonical base64url")
        if parsed.algorithm == "ES256" and not _low_s(signature):
            return Verification(BAD_SIGNATURE, "the signature is not low-S")
        try:
            signing_input = parsed.signing_input.encode("ascii")
        except UnicodeEncodeError:
            return Verification(MALFORMED, "the claims are not base64url-encoded JSON")
        if not _SIGNERS[parsed.algorithm].verify(signing_input, key.key, signature):
            return Verification(BAD_SIGNATURE, "the signature does not match")
        try:
            claims = parse_claims(json.loads(b64url_decode(parsed.payload_segment)), key.kid)
        except _ClaimsError as exc:
            return Verification(MALFORMED, f"malformed claims: {exc}")
        except (ValueError, RecursionError):
            return Verification(MALFORMED, "the claims are not base64url-encoded JSON")
        return _Cached(claims, key.algorithm)

    def _check_claims(self, claims: Claims, audiences: frozenset[str], now: float) -> Verification:
        leeway = self.leeway
        if now >= claims.expires_at + leeway:
            return Verification(EXPIRED, "the token has expired")
        if now + leeway < claims.not_before or now + leeway < claims.issued_at:
            return Verification(NOT_YET_VALID, "the token is not valid yet")
        if claims.issuer != self.issuer:
            return Verification(WRONG_ISSUER, "the token was not issued by this authority")
        if audiences.isdisjoint(claims.audience):
            return Verification(WRONG_AUDIENCE, "the token is not for this audience")
        return Verification(VALID, claims=claims)

    def _remember(self, token: str, entry: _Cached) -> None:
        cache = self._cache
        if len(cache) >= self.cache_size:
            # Evict the oldest tenth in insertion order: O(1) amortised, no LRU bookkeeping.
            for stale in list(cache)[: max(1, self.cache_size // 10)]:
                del cache[stale]
        cache[token] = entry


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
