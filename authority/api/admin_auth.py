"""Admin RPCs need `authorization: Bearer <admin token>`.

One rule, applied in one place: the call wrapper (``api.call_pipeline``) refuses every
method in ``ADMIN_METHODS`` before its handler runs, so no handler has to remember to
check. ``Revoke`` needs the admin only for some targets (a subject, a session, a
client), which only its handler can tell: it calls ``require_admin`` itself. Reading
revocations is a separate rule (``authority.api.reader_auth``).
"""

from __future__ import annotations

from typing import Any

import grpc

from authority.api.request_context import authenticate
from authority.domain.call_metadata import bearer_token
from authority.domain.errors import PermissionDenied, Unauthenticated
from authority.domain.events import set_actor
from authority.services.admin_credential import AdminCredential
from authority.v1 import admin_pb2, keys_pb2

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
