"""Admin RPCs need `authorization: Bearer <admin token>`.

One rule, applied in one place: ``AdminGate`` refuses every method in ``ADMIN_METHODS``
before its handler runs, so no handler has to remember to check. ``Revoke`` needs the
admin only for some targets (a subject, a session, a client), which only its handler
can tell: it calls ``require_admin`` itself. Reading revocations is a separate rule
(``authority.api.reader_auth``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from authority.api.errors import abort
from authority.api.request_context import authenticate
from authority.domain.call_metadata import bearer_token
from authority.domain.errors import AuthorityError, PermissionDenied, Unauthenticated
from authority.domain.events import set_actor
from authority.services.admin_credential import AdminCredential
from authority.v1 import admin_pb2, keys_pb2

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler  # not subscriptable at run time

Context = grpc.aio.ServicerContext[Any, Any]

ADMIN_ACTOR = "admin"


def _methods(service: Any, names: tuple[str, ...] | None = None) -> frozenset[str]:
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for method in service.methods
        if names is None or method.name in names
    )


# Every AdminService method, and the key-management ones of KeyService.
ADMIN_METHODS = _methods(admin_pb2.DESCRIPTOR.services_by_name["AdminService"]) | _methods(
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"], ("RotateKeys", "CompromiseKey")
)


def require_admin(context: Context, credential: AdminCredential | None) -> None:
    """``credential`` None means this listener serves no admin RPCs (a separate, mTLS
    admin listener is configured)."""
    if credential is None:
        raise PermissionDenied("admin RPCs are served on the admin listener only")
    token = bearer_token(context.invocation_metadata())
    if token is None:
        raise Unauthenticated("this RPC needs the admin credential (authorization: Bearer ...)")
    if not credential.matches(token):
        raise PermissionDenied("the admin credential is not valid")
    authenticate(ADMIN_ACTOR)  # the events this call writes name the admin as their actor
    set_actor(ADMIN_ACTOR)


class AdminGate(grpc.aio.ServerInterceptor):
    """Applies ``require_admin`` to every admin method of one listener, before the
    handler runs; a refusal answers as the handler's own errors do (``errors.abort``)."""

    def __init__(
        self, credential: AdminCredential | None, methods: frozenset[str] = ADMIN_METHODS
    ) -> None:
        self._credential = credential
        self._methods = methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._methods:
            return handler
        if handler.unary_unary is None:  # fail closed: every admin RPC is unary
            raise TypeError(f"{handler_call_details.method}: only unary admin RPCs are gated")
        behaviour: Callable[[Any, Context], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
        credential = self._credential

        async def gated(request: Any, context: Context) -> Any:
            try:
                require_admin(context, credential)
            except AuthorityError as error:
                await abort(context, error)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            gated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
