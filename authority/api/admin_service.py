"""authority.v1.AdminService: principals, clients and the audit log. Every RPC needs the admin
credential: ``authority.api.admin_auth.AdminGate`` checks it before any handler here runs."""

from __future__ import annotations

import json
from typing import Any

import grpc

from authority.api.convert import (
    client_message,
    client_template,
    principal_message,
    time_of,
    timestamp,
)
from authority.api.errors import rpc
from authority.domain.audit import MAX_PAGE_SIZE, AuditRecord
from authority.domain.bounds import check_text
from authority.domain.errors import InvalidArgument, Unavailable
from authority.domain.webhooks import DeadLetter, Webhook
from authority.services.audit import AuditLogService
from authority.services.clients import ClientService
from authority.services.principals import PrincipalService
from authority.services.webhooks import WebhookDispatcher
from authority.v1 import admin_pb2, admin_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        *,
        principals: PrincipalService,
        clients: ClientService,
        audit: AuditLogService | None = None,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self._principals = principals
        self._clients = clients
        self._audit = audit
        self._webhooks = webhooks

    @rpc
    async def CreatePrincipal(
        self, request: admin_pb2.CreatePrincipalRequest, context: Context
    ) -> admin_pb2.CreatePrincipalResponse:
        principal = await self._principals.create(request.name, request.password)
        return admin_pb2.CreatePrincipalResponse(principal=principal_message(principal))

    @rpc
    async def GetPrincipal(
        self, request: admin_pb2.GetPrincipalRequest, context: Context
    ) -> admin_pb2.GetPrincipalResponse:
        principal = await self._principals.get(request.name)
        return admin_pb2.GetPrincipalResponse(principal=principal_message(principal))

    @rpc
    async def SetPrincipalDisabled(
        self, request: admin_pb2.SetPrincipalDisabledRequest, context: Context
    ) -> admin_pb2.SetPrincipalDisabledResponse:
        principal = await self._principals.set_disabled(request.name, request.disabled)
        return admin_pb2.SetPrincipalDisabledResponse(principal=principal_message(principal))

    @rpc
    async def SetPassword(
        self, request: admin_pb2.SetPasswordRequest, context: Context
    ) -> admin_pb2.SetPasswordResponse:
        if request.keep_sessions and request.revoke_sessions:  # the deprecated field
            raise InvalidArgument("keep_sessions and revoke_sessions contradict each other")
        principal = await self._principals.set_password(
            request.name, request.password, keep_sessions=request.keep_sessions
        )
        return admin_pb2.SetPasswordResponse(principal=principal_message(principal))

    @rpc
    async def DeletePrincipal(
        self, request: admin_pb2.DeletePrincipalRequest, context: Context
    ) -> admin_pb2.DeletePrincipalResponse:
        return admin_pb2.DeletePrincipalResponse(
            deleted=await self._principals.delete(request.name)
        )

    @rpc
    async def CreateClient(
        self, request: admin_pb2.CreateClientRequest, context: Context
    ) -> admin_pb2.CreateClientResponse:
        template = client_template(request.client, self._clients.default_client)
        client, secret = await self._clients.create(
            template, confidential=request.client.confidential
        )
        return admin_pb2.CreateClientResponse(client=client_message(client), client_secret=secret)

    @rpc
    async def GetClient(
        self, request: admin_pb2.GetClientRequest, context: Context
    ) -> admin_pb2.GetClientResponse:
        return admin_pb2.GetClientResponse(
            client=client_message(await self._clients.get(request.id))
        )

    @rpc
    async def RotateClientSecret(
        self, request: admin_pb2.RotateClientSecretRequest, context: Context
    ) -> admin_pb2.RotateClientSecretResponse:
        secret = await self._clients.rotate_secret(request.id, keep_tokens=request.keep_tokens)
        return admin_pb2.RotateClientSecretResponse(client_secret=secret)

    @rpc
    async def SetClientDisabled(
        self, request: admin_pb2.SetClientDisabledRequest, context: Context
    ) -> admin_pb2.SetClientDisabledResponse:
        client = await self._clients.set_disabled(request.id, request.disabled)
        return admin_pb2.SetClientDisabledResponse(client=client_message(client))

    @rpc
    async def SetClientAllowedClaims(
        self, request: admin_pb2.SetClientAllowedClaimsRequest, context: Context
    ) -> admin_pb2.SetClientAllowedClaimsResponse:
        client = await self._clients.set_allowed_claims(
            request.id, request.allowed_claims, request.allowed_sensitive_claims
        )
        return admin_pb2.SetClientAllowedClaimsResponse(client=client_message(client))

    @rpc
    async def DeleteClient(
        self, request: admin_pb2.DeleteClientRequest, context: Context
    ) -> admin_pb2.DeleteClientResponse:
        return admin_pb2.DeleteClientResponse(deleted=await self._clients.delete(request.id))

    @rpc
    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: Context
    ) -> admin_pb2.ListAuditEventsResponse:
        if self._audit is None:
            raise Unavailable("the audit log is not served here")
        page = await self._audit.list(
            target=check_text(request.target, "target"),
            action=check_text(request.action, "action"),
            since=time_of(request.start_time, "start_time")
            if request.HasField("start_time")
            else None,
            until=time_of(request.end_time, "end_time") if request.HasField("end_time") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return admin_pb2.ListAuditEventsResponse(
            events=[audit_event_message(record) for record in page.records],
            next_page_token=page.next_page_token,
        )

    def _require_webhooks(self) -> WebhookDispatcher:
        if self._webhooks is None:
            raise Unavailable("webhooks are not served here")
        return self._webhooks

    @rpc
    async def CreateWebhook(
        self, request: admin_pb2.CreateWebhookRequest, context: Context
    ) -> admin_pb2.CreateWebhookResponse:
        webhooks = self._require_webhooks()
        webhook, secret = await webhooks.create(request.url, list(request.event_types))
        return admin_pb2.CreateWebhookResponse(webhook=webhook_message(webhook), secret=secret)

    @rpc
    async def ListWebhooks(
        self, request: admin_pb2.ListWebhooksRequest, context: Context
    ) -> admin_pb2.ListWebhooksResponse:
        webhooks = self._require_webhooks()
        return admin_pb2.ListWebhooksResponse(
            webhooks=[webhook_message(w) for w in await webhooks.subscriptions()]
        )

    @rpc
    async def DeleteWebhook(
        self, request: admin_pb2.DeleteWebhookRequest, context: Context
    ) -> admin_pb2.DeleteWebhookResponse:
        webhooks = self._require_webhooks()
        return admin_pb2.DeleteWebhookResponse(deleted=await webhooks.delete(request.id))

    @rpc
    async def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: Context
    ) -> admin_pb2.ListDeadLettersResponse:
        webhooks = self._require_webhooks()
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
        letters = await webhooks.dead_letters(request.webhook_id, request.page_size or 100)
        return admin_pb2.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(letter) for letter in letters]
        )

    @rpc
    async def ReplayDeadLetter(
        self, request: admin_pb2.ReplayDeadLetterRequest, context: Context
    ) -> admin_pb2.ReplayDeadLetterResponse:
        webhooks = self._require_webhooks()
        await webhooks.replay(request.id)
        return admin_pb2.ReplayDeadLetterResponse()


def webhook_message(webhook: Webhook) -> admin_pb2.Webhook:
    return admin_pb2.Webhook(
        id=webhook.id,
        url=webhook.url,
        event_types=list(webhook.event_types),
        created_at=timestamp(webhook.created_at),
    )


def dead_letter_message(letter: DeadLetter) -> admin_pb2.DeadLetter:
    return admin_pb2.DeadLetter(
        id=letter.id,
        webhook_id=letter.webhook_id,
        event_id=letter.event_id,
        payload_json=letter.payload.decode("utf-8", "replace"),
        attempts=letter.attempts,
        last_error=letter.last_error,
        failed_at=timestamp(letter.failed_at),
    )


def audit_event_message(record: AuditRecord) -> admin_pb2.AuditEvent:
    return admin_pb2.AuditEvent(
        id=record.event_id,
        sequence=record.event_sequence,
        action=record.action,
        actor=record.actor,
        target_type=record.target_type,
        target=record.target_id,
        source_address=record.source_address,
        request_id=record.request_id,
        result=record.result,
        occurred_at=timestamp(record.occurred_at),
        details_json=json.dumps(dict(record.data), sort_keys=True),
    )
