"""Admin RPCs need `authorization: Bearer <admin token>`."""

from __future__ import annotations

from typing import Any

import grpc

from authority.domain.call_metadata import bearer_token
from authority.domain.errors import PermissionDenied, Unauthenticated
from authority.domain.events import set_actor
from authority.services.admin_credential import AdminCredential

ADMIN_ACTOR = "admin"


def require_admin(
    context: grpc.aio.ServicerContext[Any, Any], credential: AdminCredential | None
) -> None:
    """``credential`` None means this listener serves no admin RPCs (a separate, mTLS
    admin listener is configured)."""
    if credential is None:
        raise PermissionDenied("admin RPCs are served on the admin listener only")
    token = bearer_token(context.invocation_metadata())
    if token is None:
        raise Unauthenticated("this RPC needs the admin credential (authorization: Bearer ...)")
    if not credential.matches(token):
        raise PermissionDenied("the admin credential is not valid")
    set_actor(ADMIN_ACTOR)  # the events this call writes name the admin as their actor
