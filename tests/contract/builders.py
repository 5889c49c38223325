"""Values and helpers shared by the store contract modules (one module per facet)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from authority.domain.clients import Client, GrantType
from authority.domain.keys import Algorithm, KeyRecord
from authority.domain.principals import Principal
from authority.domain.sessions import RefreshRecord, Session
from authority.store.base import Store

OpenStore = Callable[[], Awaitable[Store]]


T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def make_key(kid: str, **changes: Any) -> KeyRecord:
    key = KeyRecord(
        kid=kid,
        algorithm=Algorithm.EDDSA,
        public_jwk={"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg", "kid": kid},
        wrapped_private_key=b"\x00wrapped\xff" + kid.encode(),
        kek_id="kek-1",
        published_at=T0,
        activates_at=T0 + timedelta(hours=1),
    )
    return replace(key, **changes)


def make_principal(name: str = "alice", principal_id: str = "p-1") -> Principal:
    return Principal(id=principal_id, name=name, password_hash=HASH, disabled=False, created_at=T0)


async def insert_keys(store: Store, *keys: KeyRecord) -> None:
    async with store.key_ring_transaction() as tx:
        for key in keys:
            await tx.insert_key(key)


async def stored_key(store: Store, kid: str) -> KeyRecord:
    return next(k for k in await store.list_keys() if k.kid == kid)


def is_utc_aware(instant: datetime | None) -> bool:
    return instant is None or instant.utcoffset() == timedelta(0)


US = timedelta(microseconds=1)


OTHER_HASH = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0$b3RoZXJoYXNo"


SECRET_HASH = hashlib.sha256(b"client secret").digest()


def digest(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def epoch(instant: datetime) -> float:
    return instant.timestamp()


def make_client(client_id: str = "mobile", **changes: object) -> Client:
    client = Client(
        id=client_id,
        secret_hash=SECRET_HASH,
        grant_types=frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN}),
        audiences=("api", "billing", "a-first"),
        scopes=frozenset({"read", "write", "admin"}),
        default_scopes=("write", "read"),
        access_token_ttl=timedelta(minutes=5, microseconds=3),
        session_idle_ttl=timedelta(days=1),
        session_absolute_ttl=timedelta(days=30, seconds=1),
        disabled=False,
        created_at=T0,
    )
    return replace(client, **changes)  # type: ignore[arg-type]


def make_session(
    session_id: str = "s-1",
    *,
    subject: str = "p-1",
    client_id: str = "mobile",
    absolute_expires_at: datetime = T0 + timedelta(days=30),
) -> Session:
    return Session(
        id=session_id,
        subject=subject,
        client_id=client_id,
        audience=("api", "billing"),
        scope=("write", "read"),
        created_at=T0,
        idle_ttl=timedelta(hours=8, microseconds=1),
        absolute_expires_at=absolute_expires_at,
    )


def make_refresh(name: str, session_id: str = "s-1", issued_at: datetime = T0) -> RefreshRecord:
    return RefreshRecord(
        token_hash=digest(name),
        session_id=session_id,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(hours=8),
    )


async def start_session(store: Store, session_id: str = "s-1", **changes: object) -> Session:
    session = make_session(session_id, **changes)  # type: ignore[arg-type]
    await store.create_session(session, make_refresh(f"{session_id}/rt-0", session_id))
    return session


async def consume(
    store: Store, name: str, successor: str, at: datetime, session_id: str = "s-1"
) -> bool:
    return await store.consume_refresh(
        digest(name),
        consumed_at=at,
        successor=make_refresh(successor, session_id, issued_at=at),
        sealed=b"sealed:" + successor.encode(),
    )
