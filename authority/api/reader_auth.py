"""Who may read the revocation state.

The revocation view names principals, sessions, token ids and clients, with times: it is
not public. A caller presents ``authorization: Bearer <credential>``, either

- an access token this authority issued (verified in memory, like Verify), valid for the
  default audience and granted the scope ``authority:revocations.read`` — typically a
  client-credentials token of the service that verifies locally; or
- the admin credential, on a listener that serves admin RPCs (the admin listener when
  AUTHORITY_ADMIN_ADDRESS is set, else the only one).

No credential or an invalid one: UNAUTHENTICATED. A valid token without the scope:
PERMISSION_DENIED.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

import grpc

from authority.domain.call_metadata import bearer_token
from authority.domain.errors import PermissionDenied, Unauthenticated
from authority.domain.tokens import Verification
from authority.services.admin_credential import AdminCredential

REVOCATIONS_READ_SCOPE = "authority:revocations.read"

Context = grpc.aio.ServicerContext[Any, Any]


class Verifier(Protocol):
    """What this needs of ``authority.tokens.verifier.TokenVerifier``."""

    def verify(self, token: str, audiences: Iterable[str] = ()) -> Verification: ...


class RevocationReaders:
    def __init__(self, *, verifier: Verifier, admin: AdminCredential | None) -> None:
        self._verifier = verifier
        self._admin = admin

    def authorize(self, context: Context) -> float:
        """Raise unless the caller may read; else when its credential expires (epoch
        seconds; infinite for the admin credential). A stream ends then."""
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(
                "reading revocations needs a credential (authorization: Bearer <access token"
                f" with the scope {REVOCATIONS_READ_SCOPE}>)"
            )
        if self._admin is not None and self._admin.matches(token):
            return math.inf
        verdict = self._verifier.verify(token)
        if not verdict.valid or verdict.claims is None:
            raise Unauthenticated(f"the credential is not valid: {verdict.detail}")
        if REVOCATIONS_READ_SCOPE not in verdict.claims.scope:
            raise PermissionDenied(f"the token lacks the scope {REVOCATIONS_READ_SCOPE}")
        return float(verdict.claims.expires_at)
