"""What a call carries in its metadata: the bearer credential and the request id.

One parser each, for every place that reads them (admin and reader authorisation,
the RPC log line, audit events, Envoy's ext_authz), so they cannot disagree about
what the caller sent. The peer's address has its own in ``authority.domain.sources``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

AUTHORIZATION = "authorization"
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 64

Metadata = Iterable[tuple[str, Any]] | None


def bearer_credential(authorization: str) -> str | None:
    """The credential of ``Bearer <credential>``, stripped; None for another scheme.

    The credential may be empty or more than one word: it is returned as it is, so that
    a verifier rejects it as malformed rather than as missing."""
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()


def bearer_token(metadata: Metadata) -> str | None:
    """The first non-empty Bearer credential of the call's ``authorization`` entries."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            token = bearer_credential(value)
            if token:
                return token
    return None


def request_id(metadata: Metadata) -> str | None:
    """The caller's ``x-request-id``, cut to ``MAX_REQUEST_ID`` printable characters;
    None when there is none (or nothing printable in it)."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            cleaned = "".join(c for c in value[:MAX_REQUEST_ID] if c.isprintable())
            if cleaned:
                return cleaned
    return None


random_bits = random.getrandbits  # the module's generator: reseeded in a forked child


def new_request_id() -> str:
    """16 hex digits. A correlation id, not a secret: ``random`` rather than
    ``os.urandom``, whose system call is a visible part of a call's cost on a busy
    virtual machine; random rather than a counter, which would tell every caller how
    many calls the server answers. (``to_bytes().hex()``: a fifth of an f-string's cost.)"""
    return random_bits(64).to_bytes(8, "big").hex()
