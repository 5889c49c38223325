"""Test helpers for the client library: keys, minted tokens, a real JWKS HTTP server, and an
in-test RevocationService whose behaviour each test scripts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from authority.crypto.envelope import Kek, KekRing
from authority.crypto.signing_keys import (
    generate_private_key,
    private_key_from_bytes,
    public_jwk,
)
from authority.domain.keys import Algorithm
from authority.jose.jws import to_low_s
from authority.v1 import revocation_pb2, revocation_pb2_grpc

ISSUER = "https://auth.example.test"
# The server side of RevocationService; tests against a real server need it.
REVOCATION_SERVICE = importlib.util.find_spec("authority.api.revocation_service") is not None
KEK = "a2VrLWZvci10ZXN0cy1vbmx5LTMyLWJ5dGVzLWxvbmc"  # fixed, so tests can open the key ring


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    """A private key and its published JWK (kid = RFC 7638 thumbprint, by the server's code)."""

    algorithm: str
    private_key: Any
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    @classmethod
    def generate(cls, algorithm: str = "EdDSA") -> SigningKey:
        alg = Algorithm(algorithm)
        key = generate_private_key(alg)
        return cls(algorithm, key, public_jwk(key, alg))

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        header: Mapping[str, Any] | None = None,
        algorithm: str | None = None,
    ) -> str:
        headers = {"kid": self.kid, "typ": "at+jwt", **(header or {})}
        algorithm = algorithm or self.algorithm
        token = jwt.encode(dict(claims), self.private_key, algorithm=algorithm, headers=headers)
        return low_s(token) if algorithm == "ES256" else token


def low_s(token: str) -> str:
    """The token with its ES256 signature normalised to low-S, as the authority signs."""
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{head}.{b64(to_low_s(raw))}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "p_alice",
        "aud": "orders",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": "j_" + hashlib.sha256(repr((now, time.perf_counter())).encode()).hexdigest()[:16],
        "sid": "s_1",
        "client_id": "web",
        "scope": "orders:read orders:write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def forge(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    """A compact JWS with whatever header and payload, JSON-encoded (NaN allowed)."""
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    return f"{h}.{p}.{b64(signature)}"


def sign_raw(key: SigningKey, header: Any, payload_bytes: bytes) -> str:
    """Sign arbitrary payload bytes with ``key`` (PyJWT's algorithm objects)."""
    h = b64(json.dumps(header).encode())
    p = b64(payload_bytes)
    algorithm = jwt.get_algorithm_by_name(key.algorithm)
    signature = algorithm.sign(f"{h}.{p}".encode(), key.private_key)
    if key.algorithm == "ES256":
        signature = to_low_s(signature)
    return f"{h}.{p}.{b64(signature)}"


def jwks_document(*keys: SigningKey) -> bytes:
    return json.dumps({"keys": [k.jwk for k in keys]}, sort_keys=True).encode()


# -- a real JWKS HTTP server ------------------------------------------------------------


class JwksHttpServer:
    """``/.well-known/jwks.json`` from the stdlib, with ETag/304 and Cache-Control, counting
    every request (and optionally slow, so concurrent fetches would overlap)."""

    def __init__(self, document: bytes, *, max_age: int | None = 300, delay: float = 0.0) -> None:
        self.document = document
        self.max_age = max_age
        self.delay = delay
        self.requests = 0
        self.not_modified = 0
        self.if_none_match: list[str | None] = []
        self.status = 200
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests += 1
                    outer.if_none_match.append(self.headers.get("If-None-Match"))
                if outer.delay:
                    time.sleep(outer.delay)
                if outer.status != 200:
                    self.send_response(outer.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.document
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if self.headers.get("If-None-Match") == etag:
                    with outer._lock:
                        outer.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self._cache_control()
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self._cache_control()
                self.end_headers()
                self.wfile.write(body)

            def _cache_control(self) -> None:
                if outer.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={outer.max_age}")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    def __enter__(self) -> JwksHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- an in-test RevocationService ------------------------------------------------------


def ts(seconds: float) -> Timestamp:
    whole = int(seconds)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def revocation(
    kind: int, value: str, *, issued_before: float | None = None, expires_in: float = 3600
) -> revocation_pb2.Revocation:
    now = time.time()
    return revocation_pb2.Revocation(
        kind=kind,  # type: ignore[arg-type]
        value=value,
        issued_before=ts(now if issued_before is None else issued_before),
        expires_at=ts(now + expires_in),
    )


Script = Callable[
    [revocation_pb2.WatchRevocationsRequest, grpc.aio.ServicerContext[Any, Any]],
    AsyncIterator[revocation_pb2.WatchRevocationsResponse],
]


@dataclass
class FakeRevocationService(revocation_pb2_grpc.RevocationServiceServicer):
    """Answers CheckRevocations from ``revoked`` (a set of jti) and runs ``watch_script`` for
    each WatchRevocations call; records every request."""

    revoked: set[str] = field(default_factory=set)
    check_requests: list[revocation_pb2.CheckRevocationsRequest] = field(default_factory=list)
    watch_requests: list[revocation_pb2.WatchRevocationsRequest] = field(default_factory=list)
    check_error: grpc.StatusCode | None = None
    check_delay: float = 0.0
    watch_script: Script | None = None

    async def CheckRevocations(
        self,
        request: revocation_pb2.CheckRevocationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> revocation_pb2.CheckRevocationsResponse:
        self.check_requests.append(request)
        if self.check_delay:
            await asyncio.sleep(self.check_delay)
        if self.check_error is not None:
            await context.abort(self.check_error, "scripted failure")
        return revocation_pb2.CheckRevocationsResponse(
            revoked=[t.token_id in self.revoked for t in request.tokens], as_of=ts(time.time())
        )

    async def WatchRevocations(
        self,
        request: revocation_pb2.WatchRevocationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[revocation_pb2.WatchRevocationsResponse]:
        self.watch_requests.append(request)
        assert self.watch_script is not None
        async for message in self.watch_script(request, context):
            yield message


def event(
    *,
    snapshot: list[revocation_pb2.Revocation] | None = None,
    complete: bool = True,
    delta: revocation_pb2.Revocation | None = None,
    heartbeat: bool = False,
    resume: str = "",
    heartbeat_interval: float = 1.0,
) -> revocation_pb2.WatchRevocationsResponse:
    message = revocation_pb2.WatchRevocationsResponse(
        resume_token=resume,
        heartbeat_interval=Duration(
            seconds=int(heartbeat_interval), nanos=int((heartbeat_interval % 1) * 1e9)
        ),
    )
    if snapshot is not None:
        message.snapshot.CopyFrom(revocation_pb2.Snapshot(revocations=snapshot, complete=complete))
    elif delta is not None:
        message.revocation.CopyFrom(delta)
    elif heartbeat:
        message.heartbeat.sent_at.CopyFrom(ts(time.time()))
    return message


async def serve(servicer: FakeRevocationService) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    revocation_pb2_grpc.add_RevocationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


# -- the real server's signing key, for forged tokens it must accept ----------------------


def server_signing_keys(data_dir: Path) -> list[SigningKey]:
    """The private keys of a real server started with ``AUTHORITY_KEK=KEK``, unwrapped from
    its SQLite store: tokens signed with them are "minted" by that server as far as any
    verifier can tell, with whatever claims a test needs (expired, nbf in the future...)."""
    from authority.crypto.kek_source import _decode_text  # noqa: PLC0415
    from authority.keys.manager import private_key_aad  # noqa: PLC0415

    ring = KekRing(Kek.from_secret(_decode_text(KEK, "KEK")))
    with sqlite3.connect(f"file:{data_dir / 'authority.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT kid, algorithm, public_jwk, wrapped_private_key FROM signing_keys"
            " WHERE wrapped_private_key IS NOT NULL"
        ).fetchall()
    keys = []
    for kid, algorithm, jwk, wrapped in rows:
        private = private_key_from_bytes(
            ring.unwrap(wrapped, aad=private_key_aad(kid)), Algorithm(algorithm)
        )
        keys.append(SigningKey(algorithm, private, json.loads(jwk)))
    return keys
