"""authority.v1.TokenService."""

from __future__ import annotations

from typing import Any

import grpc

from authority.api.convert import epoch, verify_response
from authority.api.errors import rpc
from authority.domain.errors import InvalidArgument
from authority.services.issuance import TokenIssuer
from authority.tokens.verifier import TokenVerifier
from authority.v1 import token_pb2, token_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
_LATER = "arrives with the token-lifecycle work (refresh sessions and revocation)"


class TokenServicer(token_pb2_grpc.TokenServiceServicer):
    def __init__(self, *, issuer: TokenIssuer, verifier: TokenVerifier) -> None:
        self._issuer = issuer
        self._verifier = verifier

    @rpc
    async def Issue(
        self, request: token_pb2.IssueRequest, context: Context
    ) -> token_pb2.IssueResponse:
        grant = request.WhichOneof("grant")
        if grant is None:
            raise InvalidArgument(
                "a grant is required (password, client_credentials or token_exchange)"
            )
        if grant != "password":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the {grant} grant {_LATER}")
        issued = await self._issuer.issue_with_password(
            request.password.principal,
            request.password.password,
            audience=list(request.audience),
            scope=list(request.scope),
            client_id=request.client_id,
        )
        return token_pb2.IssueResponse(
            tokens=token_pb2.TokenPair(
                access_token=issued.access_token,
                token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
                access_token_expires_at=epoch(issued.expires_at),
                session_id=issued.session_id,
                scope=issued.scope,
                audience=issued.audience,
            )
        )

    async def Refresh(
        self, request: token_pb2.RefreshRequest, context: Context
    ) -> token_pb2.RefreshResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Refresh {_LATER}")
        raise AssertionError("unreachable")

    async def Revoke(
        self, request: token_pb2.RevokeRequest, context: Context
    ) -> token_pb2.RevokeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Revoke {_LATER}")
        raise AssertionError("unreachable")

    async def Verify(
        self, request: token_pb2.VerifyRequest, context: Context
    ) -> token_pb2.VerifyResponse:
        # The hot path: no decorator, and the verifier never raises.
        return verify_response(self._verifier.verify(request.token, request.audience))
