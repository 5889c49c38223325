"""An async JWKS cache: strict key parsing, HTTP validators, and a rate-limited refetch.

Keys are fetched over HTTP (``/.well-known/jwks.json``, honouring ``Cache-Control:
max-age`` and revalidating with ``If-None-Match``) or over gRPC (``KeyService.GetJwks``).
An unknown ``kid`` triggers at most one refetch per ``min_refetch_interval``, and
concurrent callers share the fetch in flight: a flood of forged kids costs the
authority at most one request per interval, never one per token.

Parsing is the authority's own (the JOSE core, ``authority.jose.jwk``): the algorithm
allow-list, matching kty/crv/alg, no private members, canonical base64url, RSA of at least
2048 bits, and a ``kid`` that must equal the key's RFC 7638 thumbprint (so no key can be
published under another key's id).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from authority.jose.jwk import (
    PRIVATE_MEMBERS,
    RSA_MAX_BITS,
    RSA_MIN_BITS,
    JwkError,
    PublicJwk,
    PublicKey,
    jwk_thumbprint,
    parse_public_jwk,
)
from authority.jose.jws import SUPPORTED_ALGORITHMS
from authority.v1 import keys_pb2, keys_pb2_grpc
from authority_client.channels import aio_channel

__all__ = [
    "JWKS_PATH",
    "MAX_DOCUMENT_BYTES",
    "PRIVATE_MEMBERS",
    "RSA_MAX_BITS",
    "RSA_MIN_BITS",
    "SUPPORTED_ALGORITHMS",
    "GrpcJwksSource",
    "HttpJwksSource",
    "JwkError",
    "JwksCache",
    "JwksFetchError",
    "JwksResponse",
    "JwksSource",
    "PublicJwk",
    "PublicKey",
    "StaticJwksSource",
    "jwk_thumbprint",
    "parse_jwk",
    "parse_jwks",
    "parse_max_age",
]

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
MAX_DOCUMENT_BYTES = 1 << 20
_MAX_AGE = re.compile(r"^\s*max-age\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)


class JwksFetchError(Exception):
    """The key set could not be fetched; the cache keeps what it had."""


def parse_jwk(jwk: Any) -> PublicJwk:
    """Strictly parse one public JWK; raise JwkError on anything the authority would not
    publish (the JOSE core's parser: the authority loads its own keys with it too)."""
    return parse_public_jwk(jwk)


def parse_jwks(
    document: bytes | str, previous: Mapping[str, PublicJwk] | None = None
) -> dict[str, PublicJwk]:
    """Parse a JWKS document. A malformed document raises JwkError; a single bad key is
    skipped (and logged) so one unusable key cannot take every other key down with it.
    Keys already parsed in ``previous`` are reused when their JWK is unchanged."""
    if len(document) > MAX_DOCUMENT_BYTES:
        raise JwkError("the JWKS document is too large")
    try:
        value = json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise JwkError("the JWKS document is not JSON") from exc
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise JwkError('the JWKS document is not an object with a "keys" list')
    keys: dict[str, PublicJwk] = {}
    duplicated: set[str] = set()
    for raw in value["keys"]:
        kid = raw.get("kid") if isinstance(raw, dict) else None
        known = previous.get(kid) if previous and isinstance(kid, str) else None
        if known is not None and isinstance(raw, dict) and dict(known.jwk) == raw:
            parsed = known
        else:
            try:
                parsed = parse_jwk(raw)
            except JwkError as exc:
                log.warning("skipping an unusable JWK %r: %s", kid, exc)
                continue
        if parsed.kid in keys:
            duplicated.add(parsed.kid)
        keys[parsed.kid] = parsed
    for kid in duplicated:  # one id, two meanings: trust neither
        log.warning("skipping JWK %r: published more than once", kid)
        del keys[kid]
    return keys


# -- sources --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JwksResponse:
    """One fetch: a new document, or ``None`` when the cached one is still current."""

    document: bytes | None
    etag: str | None = None
    max_age: float | None = None


class JwksSource(Protocol):
    """Where the key set comes from. ``etag`` is the validator of the cached document."""

    async def fetch(self, etag: str | None) -> JwksResponse: ...

    async def aclose(self) -> None: ...


def parse_max_age(cache_control: str | None) -> float | None:
    """``max-age`` of a Cache-Control header; ``no-store``/``no-cache`` mean zero."""
    if not cache_control:
        return None
    max_age: float | None = None
    for directive in cache_control.split(","):
        name = directive.strip().lower()
        if name in {"no-store", "no-cache"}:
            return 0.0
        match = _MAX_AGE.match(directive)
        if match:
            max_age = float(match.group(1))
    return max_age


class HttpJwksSource:
    """``GET /.well-known/jwks.json`` with ``If-None-Match``; urllib in a worker thread, so
    the client needs no HTTP library and the event loop never blocks."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the JWKS URL must be http:// or https://")
        self.url = url
        self.timeout = timeout

    async def fetch(self, etag: str | None) -> JwksResponse:
        return await asyncio.to_thread(self._fetch, etag)

    def _fetch(self, etag: str | None) -> JwksResponse:
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(self.url, headers=headers)  # noqa: S310 (scheme checked)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read(MAX_DOCUMENT_BYTES + 1)
                return JwksResponse(
                    body,
                    response.headers.get("ETag"),
                    parse_max_age(response.headers.get("Cache-Control")),
                )
        except urllib.error.HTTPError as error:
            if error.code == 304:
                return JwksResponse(
                    None,
                    error.headers.get("ETag") or etag,
                    parse_max_age(error.headers.get("Cache-Control")),
                )
            raise JwksFetchError(f"GET {self.url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise JwksFetchError(f"GET {self.url}: {error}") from None

    async def aclose(self) -> None:
        return None


class GrpcJwksSource:
    """``KeyService.GetJwks``: the same document with its ``etag`` and ``max_age``.

    The channel is created on first use, inside the event loop that uses it (grpc.aio
    channels belong to one loop)."""

    def __init__(
        self,
        authority: str | grpc.aio.Channel,
        *,
        timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._target = authority if isinstance(authority, str) else None
        self._channel = None if isinstance(authority, str) else authority
        self._credentials = credentials
        self.timeout = timeout

    def _stub(self) -> keys_pb2_grpc.KeyServiceAsyncStub:
        channel = self._channel
        if channel is None:
            assert self._target is not None
            channel = aio_channel(self._target, self._credentials)
            self._channel = channel
        return keys_pb2_grpc.KeyServiceStub(channel)

    async def fetch(self, etag: str | None) -> JwksResponse:
        try:
            response = await self._stub().GetJwks(keys_pb2.GetJwksRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise JwksFetchError(f"GetJwks: {error.code().name} {error.details()}") from None
        max_age = None
        if response.HasField("max_age"):
            max_age = response.max_age.ToTimedelta().total_seconds()
        if etag is not None and response.etag and response.etag == etag:
            return JwksResponse(None, etag, max_age)
        return JwksResponse(response.jwks_json.encode(), response.etag or None, max_age)

    async def aclose(self) -> None:
        if self._target is not None and self._channel is not None:
            await self._channel.close()
            self._channel = None


class StaticJwksSource:
    """A fixed document: pinned keys, offline use and tests."""

    def __init__(self, document: bytes | str | Mapping[str, Any]) -> None:
        self.set(document)

    def set(self, document: bytes | str | Mapping[str, Any]) -> None:
        if isinstance(document, Mapping):
            document = json.dumps(document)
        self.document = document.encode() if isinstance(document, str) else document
        self.fetches = 0

    async def fetch(self, etag: str | None) -> JwksResponse:
        self.fetches += 1
        return JwksResponse(self.document, None, None)

    async def aclose(self) -> None:
        return None


# -- the cache ------------------------------------------------------------------


class JwksCache:
    """The current key set, refreshed when ``max-age`` runs out or an unknown kid appears.

    Invariant: fetches start at least ``min_refetch_interval`` apart (except ``refresh``),
    and callers that need a fetch while one is in flight wait for that one (single flight).
    A failed fetch keeps the previous keys: an unreachable authority must not make every
    token unverifiable, and a removed key is caught on the next successful fetch.
    """

    def __init__(
        self,
        source: JwksSource | str,
        *,
        min_refetch_interval: float = 10.0,
        default_max_age: float = 300.0,
        max_max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source: JwksSource = HttpJwksSource(source) if isinstance(source, str) else source
        self.min_refetch_interval = min_refetch_interval
        self.default_max_age = default_max_age
        self.max_max_age = max_max_age
        self._clock = clock
        self._keys: dict[str, PublicJwk] = {}
        self._etag: str | None = None
        self._expires_at = -math.inf
        self._last_attempt = -math.inf
        self._inflight: asyncio.Task[None] | None = None
        self.loaded = False
        self.fetches = 0
        self.last_error: str | None = None

    def current(self) -> Mapping[str, PublicJwk]:
        """The keys as they are now, without fetching."""
        return self._keys

    def fresh(self) -> Mapping[str, PublicJwk] | None:
        """The keys when ``keys()`` would return them without awaiting anything (no fetch
        due or in flight), else ``None``: the hot path's way to skip a coroutine."""
        if self._inflight is None and (self._clock() < self._expires_at or not self._may_fetch()):
            return self._keys
        return None

    async def keys(self) -> Mapping[str, PublicJwk]:
        """The keys, refetched first if ``max-age`` has run out (and a fetch is allowed)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self._clock() >= self._expires_at and self._may_fetch():
            await self._fetch()
        return self._keys

    async def get(self, kid: str) -> PublicJwk | None:
        """The key named ``kid``; an unknown kid refetches once, if the interval allows."""
        key = (await self.keys()).get(kid)
        if key is not None:
            return key
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self._may_fetch():
            await self._fetch()
        return self._keys.get(kid)

    async def refresh(self) -> Mapping[str, PublicJwk]:
        """Fetch now, whatever the interval (joins a fetch already in flight)."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        else:
            await self._fetch()
        return self._keys

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        await self.source.aclose()

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_attempt >= self.min_refetch_interval

    async def _fetch(self) -> None:
        # Set before the first await, so every concurrent caller sees the fetch in flight.
        self._last_attempt = self._clock()
        self._inflight = asyncio.get_running_loop().create_task(self._run_fetch())
        await asyncio.shield(self._inflight)

    async def _run_fetch(self) -> None:
        self.fetches += 1
        try:
            response = await self.source.fetch(self._etag if self.loaded else None)
            if response.document is not None:
                self._keys = parse_jwks(response.document, self._keys)
                self._etag = response.etag
            elif not self.loaded:
                raise JwksFetchError("not modified, but nothing is cached")
            max_age = self.default_max_age if response.max_age is None else response.max_age
            # Floored by the refetch interval: "no-cache" must not mean one fetch per token.
            max_age = min(max(max_age, self.min_refetch_interval), self.max_max_age)
            self._expires_at = self._clock() + max_age
            self.loaded = True
            self.last_error = None
        except (JwksFetchError, JwkError) as exc:
            self.last_error = str(exc)
            log.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), exc)
        except Exception as exc:  # a source bug must not break verification
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("JWKS fetch failed unexpectedly")
        finally:
            self._inflight = None
