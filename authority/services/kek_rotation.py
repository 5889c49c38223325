"""KEK rotation (`authority kek rotate`): re-wrap every secret the KEK protects.

Private signing keys and webhook signing secrets are stored as envelopes wrapped by
the key-encryption key. After a new KEK is configured (the old one moved to
AUTHORITY_KEK_PREVIOUS), this use case moves them all under the new one and records
``kek.rotated``. It runs against the store directly, like ``migrate``: the admin API
never handles private keys, and the rotation must work whatever the servers hold.
"""

from __future__ import annotations

from datetime import UTC, datetime

from authority.config import Settings
from authority.crypto import EnvelopeError, KekRing, envelope_kek_id, load_kek
from authority.crypto.kek_source import GENERATED_FILE_NAME, load_previous_keks
from authority.domain.events import new_event
from authority.keys.kek_check import prove_keys, prove_webhooks
from authority.keys.manager import private_key_aad
from authority.services.installation import InstallationRefused
from authority.services.webhooks import webhook_secret_aad
from authority.store.base import Store
from authority.store.factory import make_store


def kek_ring(settings: Settings) -> KekRing:
    """The ring a server with these settings would hold. Never generates a KEK: an
    operator command that silently created one would hide a missing secret."""
    generated = settings.data_dir / GENERATED_FILE_NAME
    current = load_kek(
        env_value=settings.kek,
        file=settings.kek_file,
        generate_into=settings.data_dir if generated.exists() else None,
    )
    previous = load_previous_keks(env_value=settings.kek_previous, file=settings.kek_previous_file)
    return KekRing(current, previous)


def require_database(settings: Settings) -> None:
    """Operator commands that open the ring work on an existing installation: never let
    them create an empty SQLite database where one is missing."""
    if settings.database_url:
        return
    path = settings.database_path
    if not path.exists() or path.stat().st_size == 0:
        raise InstallationRefused(
            f"no database at {path} (missing or empty): nothing to operate on; check "
            "AUTHORITY_DATA_DIR. Nothing was created"
        )


async def rewrap_keys(store: Store, ring: KekRing) -> dict[str, int]:
    """Re-wrap every private key not yet under the ring's current KEK, in one key-ring
    transaction: all keys move or none do, and servers reload once, on the commit.

    Every key is checked before any is changed, so a key under a KEK the ring lacks
    aborts the whole run. Running it again moves nothing (idempotent).
    """
    moved = current = without_material = 0
    # Everything must open before anything moves: a webhook secret the ring cannot open
    # would otherwise fail the run after the keys had been committed.
    webhooks = await store.list_webhooks()
    prove_webhooks(ring, webhooks, aad=webhook_secret_aad)
    async with store.key_ring_transaction() as tx:
        keys = await tx.list_keys()
        pending = []
        for key in keys:
            if key.compromised_at is not None or not key.wrapped_private_key:
                without_material += 1
                continue
            sealed_by = envelope_kek_id(key.wrapped_private_key)
            if sealed_by not in ring.ids:
                raise EnvelopeError(
                    f"key {key.kid!r} is sealed with KEK id {sealed_by!r}, which is neither the "
                    f"current KEK ({ring.current_id!r}) nor a previous one "
                    f"({list(ring.ids[1:])!r}): add it to AUTHORITY_KEK_PREVIOUS; nothing changed"
                )
            if sealed_by == ring.current_id and key.kek_id == ring.current_id:
                current += 1
            else:
                pending.append(key)
        prove_keys(ring, keys, aad=private_key_aad)
        for key in pending:
            rewrapped = ring.rewrap(key.wrapped_private_key, aad=private_key_aad(key.kid))
            await tx.rewrap_key(key.kid, rewrapped, ring.current_id)
            moved += 1
    rewrapped_webhooks = 0
    for webhook in webhooks:
        # Webhook signing secrets are wrapped by the same KEK: move them too, or they
        # could not be opened once the old KEK is retired.
        if envelope_kek_id(webhook.wrapped_secret) != ring.current_id:
            aad = webhook_secret_aad(webhook.id)
            await store.rewrap_webhook_secret(
                webhook.id, ring.rewrap(webhook.wrapped_secret, aad=aad)
            )
            rewrapped_webhooks += 1
    if moved or rewrapped_webhooks:
        event = new_event(
            "kek.rotated",
            "kek",
            ring.current_id,
            at=datetime.now(UTC),
            data={"keys_rewrapped": moved, "webhooks_rewrapped": rewrapped_webhooks},
            actor="operator",
        )
        await store.append_events([event])
    return {
        "rewrapped": moved,
        "already_current": current,
        "without_private_key": without_material,
        "webhook_secrets_rewrapped": rewrapped_webhooks,
    }


async def rotate_kek(settings: Settings, ring: KekRing) -> dict[str, int]:
    """Open the configured store, re-wrap everything under ``ring``'s current KEK, close."""
    require_database(settings)
    store = make_store(settings.database_url, settings.database_path)
    await store.open()
    try:
        return await rewrap_keys(store, ring)
    finally:
        await store.close()
