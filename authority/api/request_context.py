"""Binds who is calling, from where and under which request id, for the events an RPC writes.

The outbox events (``authority.domain.events``) carry the caller's address and the
request id so an audit record can be matched to the access log line of the same call.
The request id is the one the logging interceptor chose (it is bound in structlog's
context variables), else the caller's ``x-request-id``, else a new one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import grpc
import structlog

from authority.domain import call_metadata
from authority.domain.events import RequestContext, bind_request
from authority.domain.sources import peer_address

ANONYMOUS = "anonymous"
# Who this call authenticated as, set by the admin gate before the handler runs (each
# RPC runs in its own task, so it never outlives the call).
_ACTOR: ContextVar[str] = ContextVar("authority_rpc_actor", default=ANONYMOUS)


def authenticate(actor: str) -> None:
    """Name the caller for the rest of this call, events included."""
    _ACTOR.set(actor)


def source_address(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's address without its port (``peer_address``): what audit events
    record and what per-source limits key on, so the two always agree."""
    return peer_address(context.peer() or "")


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    bound = structlog.contextvars.get_contextvars().get("request_id")
    if isinstance(bound, str) and bound:
        return bound
    return call_metadata.request_id(context.invocation_metadata()) or call_metadata.new_request_id()


def bind_rpc(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Called at the start of every RPC (each runs in its own task, so nothing leaks)."""
    bind_request(
        RequestContext(
            actor=_ACTOR.get(),
            source_address=source_address(context),
            request_id=_request_id(context),
        )
    )
