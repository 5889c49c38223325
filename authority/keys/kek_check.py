"""Proof that a KEK ring opens what is already stored, before anything is written.

A server or command holding the wrong KEK must not seal a new key (or re-wrap one)
into a shared ring: the correctly configured replicas could then no longer open it.
So every writer first opens every stored envelope with its ring; one that does not
open stops everything, with a message that names KEK ids and kids, never material.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from authority.crypto import EnvelopeError, KekRing, envelope_kek_id
from authority.domain.keys import KeyRecord
from authority.domain.webhooks import Webhook

Aad = Callable[[str], bytes]


class KekMismatch(EnvelopeError):
    """The configured KEK ring cannot open something already stored; nothing was changed."""


def _describe(ring: KekRing) -> str:
    previous = list(ring.ids[1:])
    text = f"the configured KEK (id {ring.current_id!r})"
    if previous:
        text += f" and previous KEKs (ids {previous!r})"
    return text


def _refuse(ring: KekRing, what: str, blob: bytes) -> KekMismatch:
    try:
        sealed_by = envelope_kek_id(blob)
    except EnvelopeError:
        return KekMismatch(
            f"{what} is not a readable key envelope: the database is damaged. Nothing was written"
        )
    if sealed_by in ring.ids:
        problem = (
            f"{_describe(ring)} holds KEK id {sealed_by!r}, but {what} sealed with it fails "
            "authentication (tampered with, or moved from another row)"
        )
    else:
        problem = (
            f"{_describe(ring)} cannot open {what}, sealed with unknown KEK id {sealed_by!r}: "
            "set AUTHORITY_KEK (or AUTHORITY_KEK_PREVIOUS) to the KEK with that id"
        )
    return KekMismatch(
        f"{problem}. Nothing was written: a process holding the wrong KEK must not seal "
        "keys that the other replicas cannot open"
    )


def prove_keys(ring: KekRing, keys: Iterable[KeyRecord], *, aad: Aad) -> None:
    """Open every stored private key (compromised keys hold none); KekMismatch if one fails.
    ``aad`` binds a blob to its kid (``authority.keys.manager.private_key_aad``)."""
    for key in keys:
        if not key.wrapped_private_key:
            continue
        try:
            ring.unwrap(key.wrapped_private_key, aad=aad(key.kid))
        except EnvelopeError:
            raise _refuse(ring, f"signing key {key.kid!r}", key.wrapped_private_key) from None


def prove_webhooks(ring: KekRing, webhooks: Sequence[Webhook], *, aad: Aad) -> None:
    """Open every webhook signing secret (wrapped by the same KEK); KekMismatch if one fails.
    ``aad`` is ``authority.services.webhooks.webhook_secret_aad``."""
    for webhook in webhooks:
        try:
            ring.unwrap(webhook.wrapped_secret, aad=aad(webhook.id))
        except EnvelopeError:
            raise _refuse(
                ring, f"the signing secret of webhook {webhook.id!r}", webhook.wrapped_secret
            ) from None


def sealing_kek_ids(keys: Iterable[KeyRecord]) -> list[str]:
    """The ids of the KEKs that sealed these keys (for messages), in first-seen order."""
    ids: list[str] = []
    for key in keys:
        if not key.wrapped_private_key:
            continue
        try:
            kek_id = envelope_kek_id(key.wrapped_private_key)
        except EnvelopeError:
            continue
        if kek_id not in ids:
            ids.append(kek_id)
    return ids
