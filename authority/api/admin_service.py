"""authority.v1.AdminService: principals and clients. Every RPC needs the admin credential."""

from __future__ import annotations

from typing import Any

import grpc

from authority.api.admin_auth import require_admin
from authority.api.convert import client_message, client_template, principal_message
from authority.api.errors import rpc
from authority.services.admin_credential import AdminCredential
from authority.services.clients import ClientService
from authority.services.principals import PrincipalService
from authority.v1 import admin_pb2, admin_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self, *, principals: PrincipalService, clients: ClientService, admin: AdminCredential | None
    ) -> None:
        self._principals = principals
        self._clients = clients
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

    @rpc
    async def SetPrincipalDisabled(
        self, request: admin_pb2.SetPrincipalDisabledRequest, context: Context
    ) -> admin_pb2.SetPrincipalDisabledResponse:
        require_admin(context, self._admin)
        principal = await self._principals.set_disabled(request.name, request.disabled)
        return admin_pb2.SetPrincipalDisabledResponse(principal=principal_message(principal))

    @rpc
    async def SetPassword(
        self, request: admin_pb2.SetPasswordRequest, context: Context
    ) -> admin_pb2.SetPasswordResponse:
        require_admin(context, self._admin)
        principal = await self._principals.set_password(
            request.name, request.password, revoke_sessions=request.revoke_sessions
        )
        return admin_pb2.SetPasswordResponse(principal=principal_message(principal))

    @rpc
    async def DeletePrincipal(
        self, request: admin_pb2.DeletePrincipalRequest, context: Context
    ) -> admin_pb2.DeletePrincipalResponse:
        require_admin(context, self._admin)
        return admin_pb2.DeletePrincipalResponse(
            deleted=await self._principals.delete(request.name)
        )

    @rpc
    async def CreateClient(
        self, request: admin_pb2.CreateClientRequest, context: Context
    ) -> admin_pb2.CreateClientResponse:
        require_admin(context, self._admin)
        template = client_template(request.client, self._clients.default_client)
        client, secret = await self._clients.create(
            template, confidential=request.client.confidential
        )
        return admin_pb2.CreateClientResponse(client=client_message(client), client_secret=secret)

    @rpc
    async def GetClient(
        self, request: admin_pb2.GetClientRequest, context: Context
    ) -> admin_pb2.GetClientResponse:
        require_admin(context, self._admin)
        return admin_pb2.GetClientResponse(
            client=client_message(await self._clients.get(request.id))
        )

    @rpc
    async def RotateClientSecret(
        self, request: admin_pb2.RotateClientSecretRequest, context: Context
    ) -> admin_pb2.RotateClientSecretResponse:
        require_admin(context, self._admin)
        secret = await self._clients.rotate_secret(request.id)
        return admin_pb2.RotateClientSecretResponse(client_secret=secret)

    @rpc
    async def SetClientDisabled(
        self, request: admin_pb2.SetClientDisabledRequest, context: Context
    ) -> admin_pb2.SetClientDisabledResponse:
        require_admin(context, self._admin)
        client = await self._clients.set_disabled(request.id, request.disabled)
        return admin_pb2.SetClientDisabledResponse(client=client_message(client))

    @rpc
    async def DeleteClient(
        self, request: admin_pb2.DeleteClientRequest, context: Context
    ) -> admin_pb2.DeleteClientResponse:
        require_admin(context, self._admin)
        return admin_pb2.DeleteClientResponse(deleted=await self._clients.delete(request.id))
