"""Revocation for local verifiers: ask the authority in batches, or follow its stream.

Local verification proves a token was issued and has not expired; only the authority
knows whether it was revoked since. Two ways to learn that, behind one interface
(``check(claims) -> RevocationStatus``):

* ``CallbackRevocations`` asks ``CheckRevocations``. Checks arriving within a few
  milliseconds share one RPC, "not revoked" answers are cached briefly, and an
  unreachable authority fails closed (the token counts as revoked, with a detail saying
  the state is unknown) unless configured to fail open.
* ``WatchedRevocations`` follows ``WatchRevocations``: a snapshot, then each new
  revocation, with heartbeats. Answers are local and instant while the stream is fresh;
  once it has been silent or broken for longer than ``max_staleness`` it fails closed
  (or asks a fallback ``CallbackRevocations``), and it reconnects with exponential backoff
  and jitter, resuming from the last ``resume_token``.

Both RPCs need a caller credential (``credential=``, e.g. ``ClientCredentialsTokens``, whose
token carries the scope ``authority:revocations.read``); without one the authority answers
UNAUTHENTICATED, which counts as unreachable (fail closed).
"""

from __future__ import annotations

from authority_client.revocation_callback import MAX_BATCH, CallbackRevocations
from authority_client.revocation_status import (
    NOT_REVOKED,
    REVOKED,
    RevocationChecker,
    RevocationStatus,
    unknown,
)
from authority_client.revocation_watch import RevocationView, WatchedRevocations

__all__ = [
    "MAX_BATCH",
    "NOT_REVOKED",
    "REVOKED",
    "CallbackRevocations",
    "RevocationChecker",
    "RevocationStatus",
    "RevocationView",
    "WatchedRevocations",
    "unknown",
]
