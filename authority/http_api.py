"""The HTTP surface: JWKS, the discovery document (RFC 8414 / OpenID Discovery), the OAuth
2.0 endpoints (``authority.oauth``), probes and metrics."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from authority.http_conditional import none_match
from authority.keys.snapshot import Jwks
from authority.oauth.discovery import JWKS_PATH, OPENID_PATH, RFC8414_PATH, metadata
from authority.oauth.http import OAuthEndpoints

DISCOVERY_PATH = OPENID_PATH
METRICS_PATH = "/metrics"


def build_app(
    *,
    jwks: Callable[[], Jwks],
    issuer: Callable[[], str],
    live: Callable[[], bool],
    ready: Callable[[], bool],
    oauth: OAuthEndpoints,
    password_grant: bool,
    metrics: Callable[[], bytes] | None = None,
    metrics_content_type: str = "text/plain; version=0.0.4; charset=utf-8",
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    def discovery_document() -> bytes:
        return json.dumps(metadata(issuer(), password=password_grant), sort_keys=True).encode()

    async def get_jwks(request: web.Request) -> web.Response:
        current = jwks()
        etag = f'"{current.etag}"'
        headers = {
            "ETag": etag,
            "Cache-Control": f"public, max-age={int(current.max_age.total_seconds())}",
        }
        if none_match(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=current.document, content_type="application/jwk-set+json", headers=headers
        )

    async def get_discovery(request: web.Request) -> web.Response:
        return web.Response(
            body=discovery_document(),
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    def probe(check: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            ok = check()
            return web.json_response(
                {"status": "ok" if ok else "unavailable"}, status=200 if ok else 503
            )

        return answer

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get(JWKS_PATH, get_jwks)
    app.router.add_get(DISCOVERY_PATH, get_discovery)
    app.router.add_get(RFC8414_PATH, get_discovery)
    oauth.add_to(app)
    app.router.add_get("/healthz", probe(live))
    app.router.add_get("/readyz", probe(ready))
    if metrics is not None:  # Prometheus exposition (authority.observability.metrics)
        app.router.add_get(METRICS_PATH, metrics_handler(metrics, metrics_content_type))
    return app


def metrics_handler(
    metrics: Callable[[], bytes], content_type: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def get_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": content_type})

    return get_metrics


def build_metrics_app(
    metrics: Callable[[], bytes], content_type: str, *, middlewares: Sequence[Middleware] = ()
) -> web.Application:
    """/metrics alone, for AUTHORITY_METRICS_ADDRESS (a port only the scraper can reach)."""
    app = web.Application(middlewares=list(middlewares))
    app.router.add_get(METRICS_PATH, metrics_handler(metrics, content_type))
    return app
