"""envoy.service.auth.v3.Authorization/Check: Envoy's ext_authz filter asks us about each request.

Why next to jwt_authn: Envoy's jwt_authn checks signatures against a cached JWKS but knows
nothing of revocations or scopes. Check answers from the same in-memory key ring and
revocation view as Verify (never the database), so it stays cheap and a revoked token is
refused within the revocation propagation delay.

Per-route requirements come from the route's ``ExtAuthzPerRoute.check_settings.
context_extensions`` (see deploy/envoy/README.md):

- ``audience``: space-separated audiences, any of which the token must carry
  (unset: ``AUTHORITY_AUDIENCE``);
- ``scopes``: space-separated scopes, all of which the token must carry (unset: none).

On success the upstream receives ``x-authority-subject``, ``-client-id``, ``-scope`` and
``-session-id``, overwriting any client-supplied copy; every other ``x-authority-*`` header
the client sent is removed, in any spelling (``x_authority_scope`` too), so upstreams can
trust the whole prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import structlog

from authority.api.errors import rpc
from authority.domain.call_metadata import bearer_credential
from authority.domain.tokens import AccessClaims, Verification
from authority.envoy.config.core.v3 import base_pb2
from authority.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authority.envoy.type.v3 import http_status_pb2
from authority.tokens.verifier import TokenVerifier

log = structlog.get_logger(__name__)

SERVICE_NAME: str = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

HEADER_PREFIX = "x-authority-"
SUBJECT_HEADER = "x-authority-subject"
CLIENT_ID_HEADER = "x-authority-client-id"
SCOPE_HEADER = "x-authority-scope"
SESSION_ID_HEADER = "x-authority-session-id"

AUDIENCE_EXTENSION = "audience"
SCOPES_EXTENSION = "scopes"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# RFC 6750 section 3: error_description and scope values exclude '"' and '\'.
_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")
_MAX_DESCRIPTION = 200

Context = grpc.aio.ServicerContext[Any, Any]


def _quoted(text: str) -> str:
    """A value safe inside an auth-param quoted-string (token details can echo client input)."""
    return _UNSAFE.sub("?", text)[:_MAX_DESCRIPTION]


def request_headers(request: Any) -> dict[str, str]:
    """The request headers, lower-cased: from ``headers``, or ``header_map`` when Envoy is
    configured with ``encode_raw_headers`` (repeated names are joined with commas)."""
    http = request.attributes.request.http
    headers = {str(name).lower(): str(value) for name, value in http.headers.items()}
    for entry in http.header_map.headers:
        name = str(entry.key).lower()
        value = (
            bytes(entry.raw_value).decode("utf-8", "replace") if entry.raw_value else entry.value
        )
        headers[name] = f"{headers[name]},{value}" if name in headers else str(value)
    return headers


def _header(name: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def _denied(
    http_status: int, grpc_status: grpc.StatusCode, challenge: str, body: Mapping[str, str]
) -> Any:
    return external_auth_pb2.CheckResponse(
        status={"code": grpc_status.value[0]},
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(
                code=http_status_pb2.StatusCode.ValueType(http_status)
            ),
            headers=[
                _header("www-authenticate", challenge),
                _header("content-type", "application/json"),
                _header("cache-control", "no-store"),
            ],
            body=json.dumps(body, sort_keys=True),
        ),
    )


def unauthenticated(verdict: Verification | None) -> Any:
    """401. With no Bearer credential at all, a bare challenge (RFC 6750 section 3.1)."""
    if verdict is None:
        return _denied(401, grpc.StatusCode.UNAUTHENTICATED, "Bearer", {"error": "missing_token"})
    description = _quoted(verdict.detail or verdict.reason.value)
    challenge = f'Bearer error="invalid_token", error_description="{description}"'
    body = {"error": "invalid_token", "error_description": description}
    return _denied(
        401, grpc.StatusCode.UNAUTHENTICATED, challenge, body | {"reason": verdict.reason.value}
    )


def insufficient_scope(required: Sequence[str], missing: Sequence[str]) -> Any:
    """403 naming every scope the route requires (RFC 6750 section 3.1)."""
    scope = _quoted(" ".join(required))
    description = _quoted("the token lacks the scope " + " ".join(missing))
    challenge = (
        f'Bearer error="insufficient_scope", scope="{scope}", error_description="{description}"'
    )
    body = {"error": "insufficient_scope", "error_description": description, "scope": scope}
    return _denied(403, grpc.StatusCode.PERMISSION_DENIED, challenge, body)


def is_identity_header(name: str) -> bool:
    """``x-authority-*`` in any case, with ``_`` for any ``-`` (as CGI folds names)."""
    return name.lower().replace("_", "-").startswith(HEADER_PREFIX)


# (id of the claims, the claims, the names removed) -> the answer: a repeated token's
# verdict is checked on every call, but its answer is built once (claims verified from the
# verifier's cache are the same object). Bounded; cleared when full.
_ANSWERS: dict[int, tuple[AccessClaims, tuple[str, ...], Any]] = {}
_MAX_ANSWERS = 4096


def allowed(claims: AccessClaims, headers: Mapping[str, str]) -> Any:
    """200: identity headers overwrite client-supplied copies; other x-authority-* go."""
    values = {
        SUBJECT_HEADER: claims.subject,
        CLIENT_ID_HEADER: claims.client_id,
        SCOPE_HEADER: " ".join(claims.scope),
        SESSION_ID_HEADER: claims.session_id,
    }
    # An empty claim (no session for client credentials, say) sets nothing, so a client's
    # copy of that header must be removed instead. So must every other spelling of the
    # prefix: CGI/WSGI upstreams read "x_authority_scope" as "x-authority-scope" (Envoy
    # should refuse such names, deploy/envoy/README.md; this holds if it is told not to).
    to_remove = tuple(
        sorted(
            name
            for name in headers
            if is_identity_header(name) and (name not in values or not values[name])
        )
    )
    known = _ANSWERS.get(id(claims))
    if known is not None and known[0] is claims and known[1] == to_remove:
        return known[2]
    to_set = [_header(name, value) for name, value in values.items() if value]
    answer = external_auth_pb2.CheckResponse(
        status={"code": grpc.StatusCode.OK.value[0]},
        ok_response=external_auth_pb2.OkHttpResponse(headers=to_set, headers_to_remove=to_remove),
    )
    if len(_ANSWERS) >= _MAX_ANSWERS:
        _ANSWERS.clear()
    _ANSWERS[id(claims)] = (claims, to_remove, answer)
    return answer


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's ext_authz (gRPC) backend over the in-memory TokenVerifier."""

    def __init__(self, *, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def check(self, request: Any) -> Any:
        """The decision for one CheckRequest (synchronous: memory only, no I/O)."""
        headers = request_headers(request)
        extensions = request.attributes.context_extensions
        audiences = str(extensions.get(AUDIENCE_EXTENSION, "")).split()
        required = str(extensions.get(SCOPES_EXTENSION, "")).split()
        token = bearer_credential(headers.get("authorization", ""))
        if token is None:
            return unauthenticated(None)
        verdict = self._verifier.verify(token, audiences)
        if not verdict.valid or verdict.claims is None:
            log.debug("ext_authz.denied", reason=verdict.reason.value)
            return unauthenticated(verdict)
        claims = verdict.claims
        missing = [scope for scope in required if scope not in claims.scope]
        if missing:
            log.debug("ext_authz.insufficient_scope", missing=missing)
            return insufficient_scope(required, missing)
        return allowed(claims, headers)

    @rpc
    async def Check(self, request: Any, context: Context) -> Any:
        return self.check(request)


def add_to_server(servicer: AuthorizationServicer, server: grpc.aio.Server) -> None:
    """Register on ``server`` (keeps the untyped generated module out of the wiring)."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
