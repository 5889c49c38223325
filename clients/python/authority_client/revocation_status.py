"""What a revocation source answers, and what ``LocalVerifier`` asks of one.

Value types only (plus the channel both sources open), so that the verifier and both
sources import them without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from authority.jose.claims import Claims
from authority_client.channels import aio_channel

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """Whether to treat a token as revoked. ``known`` is False when the authority could not
    say (unreachable, stale stream): ``revoked`` then reflects fail-closed or fail-open."""

    revoked: bool
    detail: str = ""
    known: bool = True


NOT_REVOKED = RevocationStatus(False)
REVOKED = RevocationStatus(True, "the token has been revoked")


def unknown(reason: str, *, fail_open: bool) -> RevocationStatus:
    """The answer when the revocation state cannot be known."""
    if fail_open:
        return RevocationStatus(False, f"the revocation state is unknown ({reason})", known=False)
    return RevocationStatus(
        True, f"the revocation state is unknown ({reason}); failing closed", known=False
    )


class RevocationChecker(Protocol):
    """What ``LocalVerifier`` needs: an answer per verified token, and a lifecycle."""

    async def check(self, claims: Claims) -> RevocationStatus: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def open_channel(
    authority: str | grpc.aio.Channel, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.aio.Channel, bool]:
    """The channel, and whether we own it (and so must close it)."""
    if not isinstance(authority, str):
        return authority, False
    return aio_channel(authority, credentials), True
