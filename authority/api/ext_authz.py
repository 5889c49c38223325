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
from typing import Any, cast

import grpc
import structlog

from authority.api.errors import query_rpc
from authority.api.serializers import ServerWithSerializers
from authority.domain.call_metadata import bearer_credential
from authority.domain.tokens import AccessClaims, Verification, VerifyReason
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
_VALID = VerifyReason.VALID
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


# Every lower-case spelling of the prefix with "_" for any "-" ("authority" has neither):
# one startswith over these is is_identity_header on an already lower-cased name.
_PREFIXES = tuple(f"x{first}authority{last}" for first in ("-", "_") for last in ("-", "_"))


_NONE: frozenset[str] = frozenset()


def scan_headers(request: Any) -> tuple[str, frozenset[str]]:
    """(the ``authorization`` value, the identity header names), both as
    ``request_headers`` sees them, without building the whole map: Check needs nothing
    else of the headers."""
    return _scan(request.attributes.request.http, request)


def _scan(http: Any, request: Any) -> tuple[str, frozenset[str]]:
    """``scan_headers`` of ``request``, whose ``attributes.request.http`` is ``http``."""
    # HasField first: reading an unset header_map builds two empty wrappers.
    if http.HasField("header_map") and http.header_map.headers:
        headers = request_headers(request)  # encode_raw_headers: repeated names joined
        raw = frozenset(name for name in headers if name.startswith(_PREFIXES))
        return headers.get("authorization", ""), raw
    headers = http.headers
    # Envoy sends the names lower-cased: then each name is its own lower-cased form, so
    # the credential is the one named exactly "authorization", and no name is an
    # identity header unless "x-authority" or "x_authority" occurs in one. Checked in C
    # over all the names at once (str.lower is per character: the joined names are
    # unchanged by it exactly when each name is).
    names = "\n".join(headers)
    if names == names.lower() and "x-authority" not in names and "x_authority" not in names:
        return headers.get("authorization", ""), _NONE
    authorization = ""
    identity: set[str] = set()
    # Over the names only: a protobuf map's items() looks every value up in Python
    # (twice the cost); only the credential's value is needed.
    for name in headers:
        lowered = name.lower()
        if lowered == "authorization":
            authorization = headers[name]  # the last, as in request_headers
        elif lowered.startswith(_PREFIXES):
            identity.add(lowered)
    return authorization, frozenset(identity) if identity else _NONE


def _identity_values(claims: AccessClaims) -> dict[str, str]:
    return {
        SUBJECT_HEADER: claims.subject,
        CLIENT_ID_HEADER: claims.client_id,
        SCOPE_HEADER: " ".join(claims.scope),
        SESSION_ID_HEADER: claims.session_id,
    }


def build_allowed(claims: AccessClaims, identity: frozenset[str]) -> Any:
    """200, built afresh: identity headers overwrite client-supplied copies; every other
    client-supplied identity header (``identity``: lower-cased names) is removed."""
    values = _identity_values(claims)
    # An empty claim (no session for client credentials, say) sets nothing, so a client's
    # copy of that header must be removed instead. So must every other spelling of the
    # prefix: CGI/WSGI upstreams read "x_authority_scope" as "x-authority-scope" (Envoy
    # should refuse such names, deploy/envoy/README.md; this holds if it is told not to).
    to_remove = sorted(name for name in identity if not values.get(name))
    to_set = [_header(name, value) for name, value in values.items() if value]
    return external_auth_pb2.CheckResponse(
        status={"code": grpc.StatusCode.OK.value[0]},
        ok_response=external_auth_pb2.OkHttpResponse(headers=to_set, headers_to_remove=to_remove),
    )


# (id of the claims, the claims, the identity names sent) -> the answer: a repeated
# token's verdict is checked on every call, but its answer is built once (claims verified
# from the verifier's cache are the same object). Bounded; cleared when full.
_ANSWERS: dict[int, tuple[AccessClaims, frozenset[str], Any]] = {}
_MAX_ANSWERS = 4096
# id of a remembered answer -> (the answer, its bytes): what Check's response serializer
# (``check_response_bytes``) sends for it, serialized once. Kept and cleared with _ANSWERS.
_ANSWER_BYTES: dict[int, tuple[Any, bytes]] = {}


def allowed(claims: AccessClaims, identity: frozenset[str]) -> Any:
    """``build_allowed``, remembered for the last identity names sent with these claims."""
    known = _ANSWERS.get(id(claims))
    if known is not None and known[0] is claims and known[1] == identity:
        return known[2]
    answer = build_allowed(claims, identity)
    if len(_ANSWERS) >= _MAX_ANSWERS:
        _ANSWERS.clear()
        _ANSWER_BYTES.clear()
    elif known is not None:  # replaced: other identity names, or another claims object
        _ANSWER_BYTES.pop(id(known[2]), None)
    _ANSWERS[id(claims)] = (claims, identity, answer)
    _ANSWER_BYTES[id(answer)] = (answer, answer.SerializeToString())
    return answer


def check_response_bytes(response: Any) -> bytes:
    """Check's response serializer: a remembered answer's bytes are its serialization,
    made once (a repeated token's answer is the same message every time)."""
    known = _ANSWER_BYTES.get(id(response))
    if known is not None and known[0] is response:
        return known[1]
    data: bytes = response.SerializeToString()
    return data


# The route's (audience, scopes) extensions -> (accepted audiences, required scopes):
# a deployment has a handful of routes, each asking on every request. Bounded.
_ROUTES: dict[tuple[str, str], tuple[frozenset[str], tuple[str, ...]]] = {}
_MAX_ROUTES = 1024


# A route without extensions: the default audiences, no scopes.
_ANY_ROUTE: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())


def route_requirements(audience: str, scopes: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The audiences (any of which; empty: the default) and scopes (all of) a route asks."""
    known = _ROUTES.get((audience, scopes))
    if known is None:
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        known = _ROUTES[(audience, scopes)] = (
            frozenset(audience.split()),
            tuple(scopes.split()),
        )
    return known


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's ext_authz (gRPC) backend over the in-memory TokenVerifier."""

    def __init__(self, *, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def check(self, request: Any) -> Any:
        """The decision for one CheckRequest (synchronous: memory only, no I/O)."""
        attributes = request.attributes
        authorization, identity = _scan(attributes.request.http, request)
        extensions = attributes.context_extensions
        audiences, required = (
            route_requirements(
                extensions.get(AUDIENCE_EXTENSION, ""), extensions.get(SCOPES_EXTENSION, "")
            )
            if extensions
            else _ANY_ROUTE
        )
        token = bearer_credential(authorization)
        if token is None:
            return unauthenticated(None)
        verdict = self._verifier.verify(token, audiences)
        if verdict.reason is not _VALID or verdict.claims is None:
            log.debug("ext_authz.denied", reason=verdict.reason.value)
            return unauthenticated(verdict)
        claims = verdict.claims
        if required:
            missing = [scope for scope in required if scope not in claims.scope]
            if missing:
                log.debug("ext_authz.insufficient_scope", missing=missing)
                return insufficient_scope(required, missing)
        return allowed(claims, identity)

    @query_rpc
    def Check(self, request: Any, context: Context) -> Any:
        return self.check(request)


CHECK_METHOD = f"/{SERVICE_NAME}/Check"


def add_to_server(servicer: AuthorizationServicer, server: grpc.aio.Server) -> None:
    """Register on ``server`` (keeps the untyped generated module out of the wiring), Check
    answering through ``check_response_bytes``."""
    stand_in = ServerWithSerializers(server, {CHECK_METHOD: check_response_bytes})
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        servicer, cast(grpc.aio.Server, stand_in)
    )
