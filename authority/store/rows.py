"""The column lists of every table and the mapping between rows and domain values, once
for both backends: what a backend stores differently goes through its ``Codec``.

Adding a persisted field means: a migration per backend, its column here (the list and
both mappers), and the domain value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from authority.domain.audit import AuditRecord
from authority.domain.clients import Client, GrantType
from authority.domain.events import Event, OutboxEntry
from authority.domain.keys import Algorithm, KeyRecord
from authority.domain.principals import Principal, canonical_name, name_skeleton
from authority.domain.revocation import Revocation, RevocationKind
from authority.domain.sessions import RefreshRecord, Session
from authority.domain.webhooks import DeadLetter, Webhook
from authority.store.codec import Codec, json_text

Row = Sequence[Any]
Params = tuple[object, ...]


def prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


def marks(columns: str) -> str:
    """One ``?`` per column (backends with numbered parameters rewrite them)."""
    return ", ".join("?" for _ in columns.split(","))


def insert(table: str, columns: str) -> str:
    """``INSERT`` of one row into fixed columns of a fixed table (never caller input)."""
    return f"INSERT INTO {table} ({columns}) VALUES ({marks(columns)})"  # noqa: S608


def _optional(codec_read: Any, value: Any) -> Any:
    return None if value is None else codec_read(value)


# -- keys --------------------------------------------------------------------------

KEY_COLUMNS = (
    "kid, algorithm, public_jwk, wrapped_private_key, kek_id,"
    " published_at, activates_at, retires_at, compromised_at"
)


def key_params(c: Codec, key: KeyRecord) -> Params:
    """A compromised key's private material is never written."""
    wrapped = None if key.compromised_at is not None else bytes(key.wrapped_private_key)
    return (
        key.kid,
        key.algorithm.value,
        json_text(key.public_jwk),
        wrapped,
        key.kek_id,
        c.instant(key.published_at),
        c.instant(key.activates_at),
        _optional(c.instant, key.retires_at),
        _optional(c.instant, key.compromised_at),
    )


def key_from_row(c: Codec, row: Row) -> KeyRecord:
    kid, algorithm, jwk, wrapped, kek_id, published, activates, retires, compromised = row
    return KeyRecord(
        kid=kid,
        algorithm=Algorithm(algorithm),
        public_jwk=json.loads(jwk),
        wrapped_private_key=bytes(wrapped or b""),
        kek_id=kek_id,
        published_at=c.read_instant(published),
        activates_at=c.read_instant(activates),
        retires_at=_optional(c.read_instant, retires),
        compromised_at=_optional(c.read_instant, compromised),
    )


# -- principals ----------------------------------------------------------------------

PRINCIPAL_COLUMNS = "id, name, password_hash, disabled, created_at, canonical_name, name_skeleton"
PRINCIPAL_READ = (
    "id, name, password_hash, disabled, created_at, credential_generation, credentials_changed_at"
)


def principal_params(c: Codec, principal: Principal) -> Params:
    """The store derives the unique name keys from the name."""
    return (
        principal.id,
        principal.name,
        principal.password_hash,
        c.flag(principal.disabled),
        c.instant(principal.created_at),
        canonical_name(principal.name),
        name_skeleton(principal.name),
    )


def principal_from_row(c: Codec, row: Row) -> Principal:
    """A principal never changed has no change instant (SQLite stores 0, PostgreSQL NULL)."""
    principal_id, name, password_hash, disabled, created_at, generation, changed_at = row
    return Principal(
        id=principal_id,
        name=name,
        password_hash=password_hash,
        disabled=bool(disabled),
        created_at=c.read_instant(created_at),
        generation=generation,
        credentials_changed_at=c.read_instant(changed_at) if changed_at else None,
    )


# -- clients -------------------------------------------------------------------------

CLIENT_COLUMNS = (
    "id, secret_hash, grant_types, audiences, scopes, default_scopes,"
    " access_token_ttl, session_idle_ttl, session_absolute_ttl, disabled, created_at,"
    " allowed_claims, allowed_sensitive_claims"
)
CLIENT_READ = CLIENT_COLUMNS + ", generation, changed_at"


def client_params(c: Codec, client: Client) -> Params:
    return (
        client.id,
        bytes(client.secret_hash),
        c.strings(sorted(g.value for g in client.grant_types)),
        c.strings(client.audiences),
        c.strings(sorted(client.scopes)),
        c.strings(client.default_scopes),
        c.duration(client.access_token_ttl),
        c.duration(client.session_idle_ttl),
        c.duration(client.session_absolute_ttl),
        c.flag(client.disabled),
        c.instant(client.created_at),
        c.strings(sorted(client.allowed_claims)),
        c.strings(sorted(client.sensitive_claims)),
    )


def client_from_row(c: Codec, row: Row) -> Client:
    """A row of ``CLIENT_READ``; never revoked is no change instant (0 or NULL)."""
    (client_id, secret_hash, grants, audiences, scopes, defaults, access, idle, absolute,
     disabled, created, allowed_claims, sensitive_claims, generation, changed) = row  # fmt: skip
    return Client(
        id=client_id,
        secret_hash=bytes(secret_hash),
        grant_types=frozenset(GrantType(g) for g in c.read_strings(grants)),
        audiences=tuple(c.read_strings(audiences)),
        scopes=frozenset(c.read_strings(scopes)),
        default_scopes=tuple(c.read_strings(defaults)),
        access_token_ttl=c.read_duration(access),
        session_idle_ttl=c.read_duration(idle),
        session_absolute_ttl=c.read_duration(absolute),
        disabled=bool(disabled),
        created_at=c.read_instant(created),
        allowed_claims=frozenset(c.read_strings(allowed_claims)),
        sensitive_claims=frozenset(c.read_strings(sensitive_claims)),
        generation=generation,
        changed_at=c.read_instant(changed) if changed else None,
    )


# -- sessions and refresh tokens -------------------------------------------------------

SESSION_COLUMNS = (
    "id, subject, client_id, audience, scope, created_at, idle_ttl, absolute_expires_at, revoked_at"
)
REFRESH_COLUMNS = (
    "token_hash, session_id, issued_at, expires_at, consumed_at, successor_hash, sealed_successor"
)


def session_params(c: Codec, session: Session) -> Params:
    return (
        session.id,
        session.subject,
        session.client_id,
        c.strings(session.audience),
        c.strings(session.scope),
        c.instant(session.created_at),
        c.duration(session.idle_ttl),
        c.instant(session.absolute_expires_at),
        _optional(c.instant, session.revoked_at),
    )


def session_from_row(c: Codec, row: Row) -> Session:
    session_id, subject, client_id, audience, scope, created, idle, absolute, revoked = row
    return Session(
        id=session_id,
        subject=subject,
        client_id=client_id,
        audience=tuple(c.read_strings(audience)),
        scope=tuple(c.read_strings(scope)),
        created_at=c.read_instant(created),
        idle_ttl=c.read_duration(idle),
        absolute_expires_at=c.read_instant(absolute),
        revoked_at=_optional(c.read_instant, revoked),
    )


def refresh_params(c: Codec, record: RefreshRecord) -> Params:
    return (
        record.token_hash,
        record.session_id,
        c.instant(record.issued_at),
        c.instant(record.expires_at),
        _optional(c.instant, record.consumed_at),
        record.successor_hash,
        record.sealed_successor,
    )


def refresh_from_row(c: Codec, row: Row) -> RefreshRecord:
    token_hash, session_id, issued, expires, consumed, successor, sealed = row
    return RefreshRecord(
        token_hash=bytes(token_hash),
        session_id=session_id,
        issued_at=c.read_instant(issued),
        expires_at=c.read_instant(expires),
        consumed_at=_optional(c.read_instant, consumed),
        successor_hash=None if successor is None else bytes(successor),
        sealed_successor=None if sealed is None else bytes(sealed),
    )


# -- revocations ---------------------------------------------------------------------

REVOCATION_COLUMNS = "kind, value, issued_before, expires_at"


def revocation_params(c: Codec, revocation: Revocation, recorded_at: object) -> Params:
    return (
        revocation.kind.value,
        revocation.value,
        c.epoch(revocation.issued_before),
        c.epoch(revocation.expires_at),
        recorded_at,
    )


def revocation_from_row(c: Codec, row: Row) -> Revocation:
    kind, value, issued_before, expires_at = row
    return Revocation(
        RevocationKind(kind), value, c.read_epoch(issued_before), c.read_epoch(expires_at)
    )


# -- outbox and audit log ----------------------------------------------------------------

EVENT_COLUMNS = (
    "id, type, aggregate_type, aggregate_id, occurred_at, actor, source_address, request_id, data"
)
AUDIT_COLUMNS = (
    "event_sequence, event_id, action, actor, target_type, target_id, source_address,"
    " request_id, result, occurred_at, data"
)


def event_params(c: Codec, e: Event) -> Params:
    return (
        e.id,
        e.type,
        e.aggregate_type,
        e.aggregate_id,
        c.instant(e.occurred_at),
        e.actor,
        e.source_address,
        e.request_id,
        e.data_json(),
    )


def entry_from_row(c: Codec, row: Row) -> OutboxEntry:
    """A row of ``sequence, EVENT_COLUMNS``."""
    sequence, event_id, type_, aggregate, aggregate_id, occurred, actor, source, rid, data = row
    event = Event(
        id=event_id,
        type=type_,
        aggregate_type=aggregate,
        aggregate_id=aggregate_id,
        occurred_at=c.read_instant(occurred),
        actor=actor,
        source_address=source,
        request_id=rid,
        data=json.loads(data),
    )
    return OutboxEntry(int(sequence), event)


def audit_params(c: Codec, r: AuditRecord) -> Params:
    return (
        r.event_sequence,
        r.event_id,
        r.action,
        r.actor,
        r.target_type,
        r.target_id,
        r.source_address,
        r.request_id,
        r.result,
        c.instant(r.occurred_at),
        json_text(r.data),
    )


def audit_from_row(c: Codec, row: Row) -> AuditRecord:
    sequence, event_id, action, actor, target_type, target_id, source, rid, result, at, data = row
    return AuditRecord(
        event_sequence=int(sequence),
        event_id=event_id,
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        source_address=source,
        request_id=rid,
        result=result,
        occurred_at=c.read_instant(at),
        data=json.loads(data),
    )


# -- webhooks ------------------------------------------------------------------------

WEBHOOK_COLUMNS = "id, url, event_types, wrapped_secret, created_at"
DEAD_LETTER_COLUMNS = "id, webhook_id, event_id, payload, attempts, last_error, failed_at"


def webhook_params(c: Codec, webhook: Webhook) -> Params:
    return (
        webhook.id,
        webhook.url,
        c.strings(webhook.event_types),
        bytes(webhook.wrapped_secret),
        c.instant(webhook.created_at),
    )


def webhook_from_row(c: Codec, row: Row) -> Webhook:
    webhook_id, url, event_types, secret, created_at = row
    return Webhook(
        webhook_id,
        url,
        tuple(c.read_strings(event_types)),
        bytes(secret),
        c.read_instant(created_at),
    )


def dead_letter_params(c: Codec, letter: DeadLetter) -> Params:
    return (
        letter.id,
        letter.webhook_id,
        letter.event_id,
        bytes(letter.payload),
        letter.attempts,
        letter.last_error,
        c.instant(letter.failed_at),
    )


def dead_letter_from_row(c: Codec, row: Row) -> DeadLetter:
    letter_id, webhook_id, event_id, payload, attempts, last_error, failed_at = row
    return DeadLetter(
        letter_id,
        webhook_id,
        event_id,
        bytes(payload),
        attempts,
        last_error,
        c.read_instant(failed_at),
    )
