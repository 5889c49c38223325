"""authority.v1.TokenService."""

from __future__ import annotations

from typing import Any, cast

import grpc
from google.protobuf.json_format import MessageToDict

from authority.api.admin_auth import require_admin
from authority.api.convert import epoch, timestamp, verify_response, verify_response_bytes
from authority.api.errors import rpc
from authority.api.request_context import source_address
from authority.api.serializers import ServerWithSerializers
from authority.domain.bounds import check_revocation_value
from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument
from authority.domain.events import current_request
from authority.domain.exchange import ACCESS_TOKEN
from authority.domain.revocation import RevocationKind
from authority.domain.sources import source_key
from authority.observability import rpc_line
from authority.ports.rate_limits import RateLimit
from authority.services.admin_credential import AdminCredential
from authority.services.grants import Grants
from authority.services.minter import TokenPair
from authority.services.refresh import RefreshService
from authority.services.revocations import RevocationService
from authority.services.token_revocation import TokenRevoker
from authority.tokens.verifier import TokenVerifier
from authority.v1 import token_pb2, token_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

_ADMIN_TARGETS = {
    "session_id": RevocationKind.SESSION,
    "subject": RevocationKind.SUBJECT,
    "client_id": RevocationKind.CLIENT,
    "token_id": RevocationKind.TOKEN,
}
# RevokeRequest.reason goes into the audit log: a short note, not a document.
MAX_REVOKE_REASON = 256


def pair_message(pair: TokenPair) -> token_pb2.TokenPair:
    """The answer's pair; the call's rpc line names the pair's subject (known here, so
    the line need not decode the token to find it)."""
    if pair.subject:
        rpc_line.principal.set(pair.subject)
    return token_pb2.TokenPair(
        access_token=pair.access_token,
        token_type="Bearer",
        access_token_expires_at=epoch(pair.access_expires_at),
        refresh_token=pair.refresh_token,
        refresh_token_expires_at=timestamp(pair.refresh_expires_at),
        session_id=pair.session_id,
        scope=pair.scope,
        audience=pair.audience,
    )


class TokenServicer(token_pb2_grpc.TokenServiceServicer):
    def __init__(
        self,
        *,
        grants: Grants,
        refresh: RefreshService,
        verifier: TokenVerifier,
        revocations: RevocationService,
        token_revocations: TokenRevoker,
        admin: AdminCredential | None,
        revoke_limit: RateLimit,
        clock: Clock,
    ) -> None:
        self._grants = grants
        self._refresh = refresh
        self._verifier = verifier
        self._revocations = revocations
        self._token_revocations = token_revocations
        self._admin = admin
        self._revoke_limit = revoke_limit
        self._clock = clock

    @rpc
    async def Issue(
        self, request: token_pb2.IssueRequest, context: Context
    ) -> token_pb2.IssueResponse:
        grant = request.WhichOneof("grant")
        # The caller's address as ``rpc`` bound it for this call (no second parse).
        audience, scope, source = (
            list(request.audience),
            list(request.scope),
            current_request().source_address,
        )
        if grant == "password":
            pair = await self._grants.password.issue(
                request.password.principal,
                request.password.password,
                client_id=request.client_id,
                client_secret=request.client_secret,
                audience=audience,
                scope=scope,
                source=source,
            )
        elif grant == "client_credentials":
            credentials = request.client_credentials
            pair = await self._grants.client_credentials.issue(
                credentials.client_id,
                credentials.client_secret,
                audience=audience,
                scope=scope,
                source=source,
            )
        elif grant == "token_exchange":
            return await self._exchange(request.token_exchange, audience, scope, source)
        else:
            raise InvalidArgument(
                "a grant is required (password, client_credentials or token_exchange)"
            )
        return token_pb2.IssueResponse(tokens=pair_message(pair))

    async def _exchange(
        self,
        exchange: token_pb2.TokenExchangeGrant,
        audience: list[str],
        scope: list[str],
        source: str,
    ) -> token_pb2.IssueResponse:
        """RFC 8693 when a subject token is given; else the deprecated named-subject form."""
        rfc8693 = any(
            (
                exchange.subject_token,
                exchange.subject_token_type,
                exchange.actor_token,
                exchange.actor_token_type,
                exchange.requested_token_type,
            )
        )
        if rfc8693 and (exchange.subject or exchange.HasField("claims")):
            raise InvalidArgument(
                "token exchange takes subject_token (RFC 8693) or the deprecated subject "
                "and claims, not both"
            )
        if not rfc8693:
            pair = await self._grants.token_exchange.issue(
                exchange.client_id,
                exchange.client_secret,
                exchange.subject,
                claims=MessageToDict(exchange.claims) if exchange.HasField("claims") else None,
                audience=audience,
                scope=scope,
                source=source,
            )
            return token_pb2.IssueResponse(tokens=pair_message(pair))
        pair = await self._grants.token_exchange.exchange(
            exchange.client_id,
            exchange.client_secret,
            subject_token=exchange.subject_token,
            subject_token_type=exchange.subject_token_type,
            actor_token=exchange.actor_token,
            actor_token_type=exchange.actor_token_type,
            requested_token_type=exchange.requested_token_type,
            audience=audience,
            scope=scope,
            source=source,
        )
        return token_pb2.IssueResponse(tokens=pair_message(pair), issued_token_type=ACCESS_TOKEN)

    @rpc
    async def Refresh(
        self, request: token_pb2.RefreshRequest, context: Context
    ) -> token_pb2.RefreshResponse:
        if not request.refresh_token:
            raise InvalidArgument("refresh_token is required")
        pair = await self._refresh.refresh(
            request.refresh_token,
            client_id=request.client_id,
            client_secret=request.client_secret,
        )
        return token_pb2.RefreshResponse(tokens=pair_message(pair))

    @rpc
    async def Revoke(
        self, request: token_pb2.RevokeRequest, context: Context
    ) -> token_pb2.RevokeResponse:
        target = request.WhichOneof("target")
        if target is None:
            raise InvalidArgument("a revocation target is required")
        value: str = getattr(request, target)
        if not value:
            raise InvalidArgument(f"{target} must not be empty")
        reason = request.reason
        if len(reason) > MAX_REVOKE_REASON:
            raise InvalidArgument(
                f"reason must be at most {MAX_REVOKE_REASON} characters ({len(reason)} given)"
            )
        if target in ("access_token", "refresh_token"):
            # Anyone may call these (the token is the credential): a per-source budget
            # keeps one address from making the store do work without end.
            await self._revoke_limit.acquire(
                source_key(source_address(context)), self._clock.timestamp()
            )
        if target == "access_token":
            revoked_at = await self._token_revocations.revoke_access_token(value, reason=reason)
        elif target == "refresh_token":
            revoked_at = await self._token_revocations.revoke_refresh_token(value, reason=reason)
        else:
            require_admin(context, self._admin)
            check_revocation_value(value, target)
            revoked_at = await self._revocations.revoke(
                _ADMIN_TARGETS[target], value, reason=reason
            )
        return token_pb2.RevokeResponse(revoked_at=timestamp(revoked_at))

    async def Verify(
        self, request: token_pb2.VerifyRequest, context: Context
    ) -> token_pb2.VerifyResponse:
        # The hot path: no decorator, and the verifier never raises.
        return verify_response(self._verifier.verify(request.token, request.audience))


VERIFY_METHOD = "/authority.v1.TokenService/Verify"


def add_to_server(servicer: TokenServicer, server: grpc.aio.Server) -> None:
    """Register on ``server``, Verify answering through ``verify_response_bytes``."""
    stand_in = ServerWithSerializers(server, {VERIFY_METHOD: verify_response_bytes})
    token_pb2_grpc.add_TokenServiceServicer_to_server(servicer, cast(grpc.aio.Server, stand_in))
