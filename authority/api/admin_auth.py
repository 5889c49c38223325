"""Admin RPCs need `authorization: Bearer <admin token>`."""

from __future__ import annotations

from typing import Any

import grpc

from authority.domain.errors import PermissionDenied, Unauthenticated
from authority.domain.events import set_actor
from authority.services.admin_credential import AdminCredential

ADMIN_ACTOR = "admin"


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def require_admin(
    context: grpc.aio.ServicerContext[Any, Any], credential: AdminCredential | None
) -> None:
    """``credential`` None means this listener serves no admin RPCs (a separate, mTLS
    admin listener is configured)."""
    if credential is None:
        raise PermissionDenied("admin RPCs are served on the admin listener only")
    token = bearer_token(context)
    if token is None:
        raise Unauthenticated("this RPC needs the admin credential (authorization: Bearer ...)")
    if not credential.matches(token):
        raise PermissionDenied("the admin credential is not valid")
    set_actor(ADMIN_ACTOR)  # the events this call writes name the admin as their actor
