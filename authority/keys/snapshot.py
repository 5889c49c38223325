"""An immutable view of the key ring at an instant, rebuilt (purely) when a key changes state."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authority.crypto import public_key_from_jwk
from authority.domain.keys import KeyPolicy, KeyRecord
from authority.tokens.jws import SigningKey, VerificationKey


@dataclass(frozen=True, slots=True)
class Jwks:
    """The published document, byte for byte, with its HTTP validators."""

    document: bytes
    keys: tuple[Mapping[str, str], ...]
    etag: str
    max_age: timedelta


@dataclass(frozen=True, slots=True)
class KeyRingSnapshot:
    built_at: datetime
    valid_until: datetime | None
    signer: SigningKey | None
    verification_keys: Mapping[str, VerificationKey]
    jwks: Jwks
    records: tuple[KeyRecord, ...]


def build_snapshot(
    records: Sequence[KeyRecord],
    private_keys: Mapping[str, Any],
    policy: KeyPolicy,
    now: datetime,
    *,
    jwks_max_age: timedelta,
    public_keys: Mapping[str, Any] | None = None,
) -> KeyRingSnapshot:
    """Pure: the signer, the verification keys and the JWKS for ``now``.

    ``public_keys`` lets the caller reuse already-parsed keys across rebuilds.
    """
    published = policy.published(records, now)
    parsed = dict(public_keys or {})
    verification: dict[str, VerificationKey] = {}
    for record in published:
        key = parsed.get(record.kid)
        if key is None:
            key = public_key_from_jwk(record.public_jwk)
        verification[record.kid] = VerificationKey(record.kid, record.algorithm, key)
    signer_record = policy.signing_key(records, now)
    signer = None
    if signer_record is not None and signer_record.kid in private_keys:
        signer = SigningKey(
            signer_record.kid, signer_record.algorithm, private_keys[signer_record.kid]
        )
    jwk_list = tuple(dict(r.public_jwk) for r in published)
    document = json.dumps({"keys": list(jwk_list)}, sort_keys=True, separators=(",", ":")).encode()
    etag = hashlib.sha256(document).hexdigest()[:32]
    return KeyRingSnapshot(
        built_at=now,
        valid_until=policy.next_change(records, now),
        signer=signer,
        verification_keys=verification,
        jwks=Jwks(document, jwk_list, etag, jwks_max_age),
        records=tuple(records),
    )
