"""Binds who is calling, from where and under which request id, for the events an RPC writes.

The outbox events (``authority.domain.events``) carry the caller's address and the
request id so an audit record can be matched to the access log line of the same call.
The request id is the one the call wrapper bound (``REQUEST_ID``, structlog's context
variable: every line of the call has it), else the caller's ``x-request-id``, else a
new one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import grpc

from authority.domain import call_metadata
from authority.domain.events import RequestContext, bind_request
from authority.domain.sources import peer_address
from authority.observability.logging import ContextBinding

ANONYMOUS = "anonymous"
# Who this call authenticated as, set by the admin gate before the handler runs (each
# RPC runs in its own task, so it never outlives the call).
_ACTOR: ContextVar[str] = ContextVar("authority_rpc_actor", default=ANONYMOUS)

# The call's request id, bound by the call wrapper (``api.call_pipeline``) as it starts.
REQUEST_ID = ContextBinding("request_id")
# peer -> its address: a connection's calls share a peer, and parsing one is not free.
_ADDRESSES: dict[str, str] = {}
_MAX_ADDRESSES = 4096


def authenticate(actor: str) -> None:
    """Name the caller for the rest of this call, events included."""
    _ACTOR.set(actor)


def source_address(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's address without its port (``peer_address``): what audit events
    record and what per-source limits key on, so the two always agree."""
    peer = context.peer() or ""
    address = _ADDRESSES.get(peer)
    if address is None:
        if len(_ADDRESSES) >= _MAX_ADDRESSES:
            _ADDRESSES.clear()
        address = _ADDRESSES[peer] = peer_address(peer)
    return address


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    bound = REQUEST_ID.get()
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
