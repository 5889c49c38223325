"""The OAuth 2.0 endpoints over HTTP: token (RFC 6749), revocation (RFC 7009) and
introspection (RFC 7662).

Only HTTP lives here: form parsing, client authentication extraction, the RFC 6749
section 5.2 error answers and JSON. Every decision is the services' (``OAuthGrants``),
called as the gRPC API calls them, with the peer's address as the source; each call gets
the gRPC API's request id, audit context, per-call log line and metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from aiohttp import web

from authority.api.errors import STATUS_BY_CODE
from authority.api.request_context import ANONYMOUS
from authority.domain.clock import Clock
from authority.domain.errors import (
    AudienceNotAllowed,
    AuthorityError,
    ClientUnauthenticated,
    ErrorCode,
    GrantDisabled,
    GrantNotAllowed,
    PermissionDenied,
    ResourceExhausted,
    ScopeNotAllowed,
    Unauthenticated,
)
from authority.domain.events import RequestContext, bind_request
from authority.domain.exchange import ACCESS_TOKEN
from authority.domain.exchange import GRANT_TYPE as TOKEN_EXCHANGE
from authority.domain.sources import host_address
from authority.domain.tokens import AccessClaims
from authority.oauth.discovery import INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH
from authority.oauth.grants import ClientCredentials, OAuthGrants
from authority.observability import metrics, rpc_metrics
from authority.services.minter import TokenPair

log = structlog.get_logger(__name__)

MAX_BODY = 16 * 1024  # a form of a few tokens and credentials; 413 beyond
MAX_FIELDS = 64
FORM = "application/x-www-form-urlencoded"
REALM = 'Basic realm="authority"'
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REQUEST_ID_HEADER = "X-Request-ID"
_MAX_REQUEST_ID = 64
# Parameters that may repeat (RFC 8693 section 2.1 lets `audience` name several).
_REPEATABLE = frozenset({"audience", "resource"})


class OAuthError(Exception):
    """An error answer (RFC 6749 section 5.2): ``error`` and a description safe to show."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        code: ErrorCode = ErrorCode.INVALID_ARGUMENT,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.code = code
        self.headers = headers or {}


def invalid_request(description: str) -> OAuthError:
    return OAuthError(400, "invalid_request", description)


def invalid_client(description: str) -> OAuthError:
    return OAuthError(
        401,
        "invalid_client",
        description,
        code=ErrorCode.UNAUTHENTICATED,
        headers={"WWW-Authenticate": REALM},
    )


def from_domain(error: AuthorityError) -> OAuthError:
    """The OAuth answer to a service's error; the message is the service's safe one."""
    message = error.message
    if isinstance(error, ClientUnauthenticated):
        return invalid_client(message)
    if isinstance(error, ResourceExhausted):
        retry_after = getattr(error, "retry_after", None)
        wait = max(1, math.ceil(retry_after)) if retry_after else 1
        # No RFC 6749 code means "rate limited": 429 says it, temporarily_unavailable
        # (RFC 6749 section 4.1.2.1) is the registered code closest to it.
        return OAuthError(
            429,
            "temporarily_unavailable",
            message,
            code=error.code,
            headers={"Retry-After": str(wait)},
        )
    kinds: tuple[tuple[type[AuthorityError], str], ...] = (
        (GrantDisabled, "unsupported_grant_type"),
        (GrantNotAllowed, "unauthorized_client"),
        (ScopeNotAllowed, "invalid_scope"),
        (AudienceNotAllowed, "invalid_target"),  # RFC 8693 section 2.2.2
        (PermissionDenied, "unauthorized_client"),
        (Unauthenticated, "invalid_grant"),
    )
    for kind, name in kinds:
        if isinstance(error, kind):
            return OAuthError(400, name, message, code=error.code)
    if error.code is ErrorCode.INVALID_ARGUMENT:
        return OAuthError(400, "invalid_request", message)
    if error.code in (ErrorCode.UNAVAILABLE, ErrorCode.CONFLICT):
        return OAuthError(
            503, "temporarily_unavailable", message, code=error.code, headers={"Retry-After": "1"}
        )
    return OAuthError(500, "server_error", "internal error", code=ErrorCode.INTERNAL)


@dataclass(frozen=True, slots=True)
class Form:
    """A parsed form: each name's values; empty values count as omitted (RFC 6749 3.1)."""

    values: dict[str, list[str]]

    def one(self, name: str) -> str:
        found = self.values.get(name, [])
        if len(found) > 1:
            raise invalid_request(f"parameter {name!r} is repeated")  # RFC 6749 section 3.2
        return found[0] if found else ""

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))


async def read_form(request: web.Request) -> Form:
    """The body, bounded, as a form. 415 for another media type, 413 beyond ``MAX_BODY``."""
    if request.content_type != FORM:
        raise OAuthError(
            415, "invalid_request", f"the body must be {FORM}", headers={"Accept-Post": FORM}
        )
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise OAuthError(415, "invalid_request", "the form must be UTF-8")
    too_large = OAuthError(413, "invalid_request", f"the body exceeds {MAX_BODY} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise too_large
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=False,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as exc:
        raise invalid_request("the form is not valid UTF-8") from exc
    except ValueError as exc:
        raise invalid_request(f"the form has more than {MAX_FIELDS} fields") from exc
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return Form(values)


def client_credentials(request: web.Request, form: Form) -> tuple[ClientCredentials, str]:
    """The credentials presented and how (``client_secret_basic``, ``client_secret_post``
    or ``none``). Only one method may be used (RFC 6749 section 2.3)."""
    body_id, body_secret = form.one("client_id"), form.one("client_secret")
    header = request.headers.get("Authorization")
    if header is None:
        if body_secret:
            if not body_id:
                raise invalid_client("client_secret needs a client_id")
            return ClientCredentials(body_id, body_secret), "client_secret_post"
        return ClientCredentials(body_id, ""), "none"
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client("client authentication in the Authorization header must be Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, colon, raw_secret = decoded.partition(":")
        # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic.
        client_id = urllib.parse.unquote_plus(raw_id, errors="strict")
        secret = urllib.parse.unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_client("malformed Basic credentials") from exc
    if not colon or not client_id:
        raise invalid_client("malformed Basic credentials")
    if body_secret or (body_id and body_id != client_id):
        raise invalid_request("use one client authentication method, not Basic and the form")
    return ClientCredentials(client_id, secret), "client_secret_basic"


def token_response(pair: TokenPair, now: float) -> dict[str, Any]:
    """RFC 6749 section 5.1."""
    answer: dict[str, Any] = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": max(0, pair.access_expires_at - int(now)),
    }
    if pair.refresh_token:
        answer["refresh_token"] = pair.refresh_token
    if pair.scope:
        answer["scope"] = " ".join(pair.scope)
    return answer


def introspection(claims: AccessClaims) -> dict[str, Any]:
    """RFC 7662 section 2.2 for a valid access token."""
    issued = int(claims.issued_at) if claims.issued_at.is_integer() else claims.issued_at
    answer: dict[str, Any] = {
        "active": True,
        "token_type": "Bearer",
        "client_id": claims.client_id,
        "sub": claims.subject,
        "aud": claims.audience[0] if len(claims.audience) == 1 else list(claims.audience),
        "iss": claims.issuer,
        "exp": claims.expires_at,
        "iat": issued,
        "nbf": claims.not_before,
        "jti": claims.token_id,
    }
    if claims.scope:
        answer["scope"] = " ".join(claims.scope)
    return answer


def _json(status: int, body: dict[str, Any] | None, headers: dict[str, str]) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if given and len(given) <= _MAX_REQUEST_ID and given.isascii() and given.isprintable():
        return given
    return secrets.token_hex(8)


Endpoint = Callable[[web.Request, OAuthGrants, str], Awaitable[web.Response]]


class OAuthEndpoints:
    """The three endpoints. ``grants`` is None while the server is still starting."""

    def __init__(self, grants: Callable[[], OAuthGrants | None], clock: Clock) -> None:
        self._grants = grants
        self._clock = clock

    def add_to(self, app: web.Application) -> None:
        for path, endpoint in (
            (TOKEN_PATH, self.token),
            (REVOKE_PATH, self.revoke),
            (INTROSPECT_PATH, self.introspect),
        ):
            app.router.add_route("*", path, self._observed(path, endpoint))

    def _observed(self, path: str, endpoint: Endpoint) -> Callable[..., Any]:
        """The gRPC API's per-call treatment: a request id (echoed), the audit context,
        one log line, the RPC metrics (method label ``oauth2/...``) and error counts."""
        observe = rpc_metrics.rpc_observer(path)

        async def serve(request: web.Request) -> web.Response:
            started = time.perf_counter()
            source = host_address(request.remote or "")
            request_id = _request_id(request)
            bound = structlog.contextvars.bind_contextvars(request_id=request_id)
            bind_request(
                RequestContext(actor=ANONYMOUS, source_address=source, request_id=request_id)
            )
            code: ErrorCode | None = ErrorCode.INTERNAL
            status = 500
            try:
                response, code = await self._answer(request, endpoint, source)
                status = response.status
                response.headers[REQUEST_ID_HEADER] = request_id
                return response
            finally:
                elapsed = time.perf_counter() - started
                grpc_code = grpc.StatusCode.OK if code is None else STATUS_BY_CODE[code]
                observe(grpc_code, elapsed, None)
                log.info(
                    "rpc",
                    method=f"{request.method} {path}",
                    peer=source,
                    latency_ms=round(elapsed * 1000, 3),
                    code=grpc_code.name,
                    status=status,
                )
                structlog.contextvars.reset_contextvars(**bound)

        return serve

    async def _answer(
        self, request: web.Request, endpoint: Endpoint, source: str
    ) -> tuple[web.Response, ErrorCode | None]:
        try:
            if request.method != "POST":
                raise OAuthError(405, "invalid_request", "use POST", headers={"Allow": "POST"})
            grants = self._grants()
            if grants is None:
                raise OAuthError(
                    503,
                    "temporarily_unavailable",
                    "the server is starting",
                    code=ErrorCode.UNAVAILABLE,
                    headers={"Retry-After": "1"},
                )
            try:
                return await endpoint(request, grants, source), None
            except AuthorityError as error:
                metrics.count_error(error)
                raise from_domain(error) from error
        except OAuthError as error:
            body = {"error": error.error, "error_description": error.description}
            return _json(error.status, body, {**NO_STORE, **error.headers}), error.code
        except Exception:
            log.exception("oauth.internal_error", path=request.path)
            body = {"error": "server_error", "error_description": "internal error"}
            return _json(500, body, dict(NO_STORE)), ErrorCode.INTERNAL

    # -- the endpoints

    async def token(self, request: web.Request, grants: OAuthGrants, source: str) -> web.Response:
        form = await read_form(request)
        client, method = client_credentials(request, form)
        grant_type = form.one("grant_type")
        audience, scope = form.all("audience"), form.one("scope").split()
        if not grant_type:
            raise invalid_request("grant_type is required")
        if grant_type == "client_credentials":
            if method == "none":
                raise invalid_client("client_credentials needs client authentication")
            pair = await grants.client_credentials(
                client, audience=audience, scope=scope, source=source
            )
        elif grant_type == "password":
            pair = await grants.password(
                form.one("username"),
                form.one("password"),
                client,
                audience=audience,
                scope=scope,
                source=source,
            )
        elif grant_type == "refresh_token":
            token = form.one("refresh_token")
            if not token:
                raise invalid_request("refresh_token is required")
            # A narrower `scope` is not supported: the answer names the session's scope.
            pair = await grants.refresh(token, client)
        elif grant_type == TOKEN_EXCHANGE:
            if method == "none":
                raise invalid_client("token exchange needs client authentication")
            if form.all("resource"):
                # RFC 8693 section 2.2.2: a target this server cannot issue for.
                raise OAuthError(400, "invalid_target", "resource is not supported; use audience")
            pair = await grants.token_exchange(
                client,
                subject_token=form.one("subject_token"),
                subject_token_type=form.one("subject_token_type"),
                actor_token=form.one("actor_token"),
                actor_token_type=form.one("actor_token_type"),
                requested_token_type=form.one("requested_token_type"),
                audience=audience,
                scope=scope,
                source=source,
            )
            answer = token_response(pair, self._clock.timestamp())
            # RFC 8693 section 2.2.1: the type of what was issued (always an access token).
            answer["issued_token_type"] = ACCESS_TOKEN
            return _json(200, answer, dict(NO_STORE))
        else:
            raise OAuthError(
                400, "unsupported_grant_type", f"grant_type {grant_type[:64]!r} is not supported"
            )
        return _json(200, token_response(pair, self._clock.timestamp()), dict(NO_STORE))

    async def revoke(self, request: web.Request, grants: OAuthGrants, source: str) -> web.Response:
        """RFC 7009: the token is the credential (as over gRPC); a client that presents a
        secret must present the right one. 200 whether or not the token was ours."""
        form = await read_form(request)
        client, method = client_credentials(request, form)
        if method != "none":
            await grants.authenticate_client(client, source=source)
        token = form.one("token")
        if not token:
            raise invalid_request("token is required")
        form.one("token_type_hint")  # optional; the token's own form decides (RFC 7009 2.1)
        await grants.revoke(token, source=source)
        return _json(200, None, dict(NO_STORE))

    async def introspect(
        self, request: web.Request, grants: OAuthGrants, source: str
    ) -> web.Response:
        """RFC 7662, for authenticated confidential clients only. Active means Verify
        answers VALID (signature, time, issuer, revocation); refresh tokens and anything
        else answer ``active: false``."""
        form = await read_form(request)
        client, method = client_credentials(request, form)
        if method == "none":
            raise invalid_client("introspection needs client authentication")
        await grants.authenticate_client(client, source=source)
        token = form.one("token")
        if not token:
            raise invalid_request("token is required")
        verdict = grants.introspect(token)
        body = introspection(verdict.claims) if verdict.claims is not None else {"active": False}
        return _json(200, body, dict(NO_STORE))
