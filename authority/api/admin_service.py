"""authority.v1.AdminService."""

from __future__ import annotations

from typing import Any

import grpc

from authority.api.admin_auth import require_admin
from authority.api.convert import principal_message
from authority.api.errors import rpc
from authority.services.admin_credential import AdminCredential
from authority.services.principals import PrincipalService
from authority.v1 import admin_pb2, admin_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, *, principals: PrincipalService, admin: AdminCredential) -> None:
        self._principals = principals
        self._admin = admin

    @rpc
    async def CreatePrincipal(
        self, request: admin_pb2.CreatePrincipalRequest, context: Context
    ) -> admin_pb2.CreatePrincipalResponse:
        require_admin(context, self._admin)
        principal = await self._principals.create(request.name, request.password)
        return admin_pb2.CreatePrincipalResponse(principal=principal_message(principal))

    @rpc
    async def GetPrincipal(
        self, request: admin_pb2.GetPrincipalRequest, context: Context
    ) -> admin_pb2.GetPrincipalResponse:
        require_admin(context, self._admin)
        principal = await self._principals.get(request.name)
        return admin_pb2.GetPrincipalResponse(principal=principal_message(principal))
