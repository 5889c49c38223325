"""Domain values to protobuf messages and back."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from authority.domain import bounds
from authority.domain.clients import Client, GrantType, clean_values
from authority.domain.errors import InvalidArgument
from authority.domain.keys import Algorithm, KeyPolicy, KeyRecord, KeyState
from authority.domain.principals import Principal
from authority.domain.tokens import AccessClaims, Verification, VerifyReason
from authority.keys.snapshot import Jwks
from authority.v1 import admin_pb2, keys_pb2, token_pb2

VERIFY_RESULT: dict[VerifyReason, token_pb2.VerifyResult.ValueType] = {
    VerifyReason.VALID: token_pb2.VERIFY_RESULT_VALID,
    VerifyReason.MALFORMED: token_pb2.VERIFY_RESULT_MALFORMED,
    VerifyReason.TOO_LARGE: token_pb2.VERIFY_RESULT_TOO_LARGE,
    VerifyReason.DISALLOWED_ALGORITHM: token_pb2.VERIFY_RESULT_DISALLOWED_ALGORITHM,
    VerifyReason.UNKNOWN_KEY: token_pb2.VERIFY_RESULT_UNKNOWN_KEY,
    VerifyReason.BAD_SIGNATURE: token_pb2.VERIFY_RESULT_BAD_SIGNATURE,
    VerifyReason.EXPIRED: token_pb2.VERIFY_RESULT_EXPIRED,
    VerifyReason.NOT_YET_VALID: token_pb2.VERIFY_RESULT_NOT_YET_VALID,
    VerifyReason.WRONG_ISSUER: token_pb2.VERIFY_RESULT_WRONG_ISSUER,
    VerifyReason.WRONG_AUDIENCE: token_pb2.VERIFY_RESULT_WRONG_AUDIENCE,
    VerifyReason.REVOKED: token_pb2.VERIFY_RESULT_REVOKED,
    VerifyReason.WRONG_TYPE: token_pb2.VERIFY_RESULT_WRONG_TYPE,
}

ALGORITHM_TO_PB: dict[Algorithm, keys_pb2.SigningAlgorithm.ValueType] = {
    Algorithm.EDDSA: keys_pb2.SIGNING_ALGORITHM_EDDSA,
    Algorithm.ES256: keys_pb2.SIGNING_ALGORITHM_ES256,
    Algorithm.RS256: keys_pb2.SIGNING_ALGORITHM_RS256,
}
ALGORITHM_FROM_PB = {value: key for key, value in ALGORITHM_TO_PB.items()}

KEY_STATE_TO_PB: dict[KeyState, keys_pb2.KeyState.ValueType] = {
    KeyState.PENDING: keys_pb2.KEY_STATE_PENDING,
    KeyState.ACTIVE: keys_pb2.KEY_STATE_ACTIVE,
    KeyState.RETIRED: keys_pb2.KEY_STATE_RETIRED,
    KeyState.REMOVED: keys_pb2.KEY_STATE_REMOVED,
    KeyState.COMPROMISED: keys_pb2.KEY_STATE_COMPROMISED,
}


def timestamp(instant: datetime | None) -> Timestamp | None:
    if instant is None:
        return None
    message = Timestamp()
    message.FromDatetime(instant)
    return message


def time_of(message: Timestamp, what: str) -> datetime:
    """A request's Timestamp, checked before conversion (protobuf raises on some values
    and datetime on others)."""
    return bounds.instant(message.seconds, message.nanos, what)


def duration_of(message: Duration, what: str) -> timedelta:
    """A request's Duration, checked before conversion."""
    return bounds.duration(message.seconds, message.nanos, what)


def epoch(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def instant(seconds: float) -> Timestamp:
    """Seconds since the epoch, fractions included (``iat``, the revocation view's
    instants), as a Timestamp, to the microsecond (as ``_claims_fields`` does)."""
    micros = round(seconds * 1_000_000)
    whole, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=whole, nanos=rest * 1_000)


def _claims_fields(claims: AccessClaims) -> Any:
    """The Claims message as constructor fields: protobuf builds nested messages from dicts
    in C, about twice as fast as building each Timestamp and copying it in. (Typed Any:
    the stubs accept only a message where protobuf also takes its dict.)"""
    micros = round(claims.issued_at * 1_000_000)
    whole, rest = divmod(micros, 1_000_000)
    return {
        "issuer": claims.issuer,
        "subject": claims.subject,
        "audience": claims.audience,
        "expires_at": {"seconds": claims.expires_at},
        "issued_at": {"seconds": whole, "nanos": rest * 1_000},
        "not_before": {"seconds": claims.not_before},
        "token_id": claims.token_id,
        "session_id": claims.session_id,
        "client_id": claims.client_id,
        "scope": claims.scope,
        "key_id": claims.key_id,
    }


def claims_message(claims: AccessClaims) -> token_pb2.Claims:
    message = token_pb2.Claims(**_claims_fields(claims))
    if claims.extra:
        message.extra.update(dict(claims.extra))
    return message


# id of the claims -> (the claims, the VALID answer): a repeated token's verdict is
# checked on every call, but its answer is built once (claims verified from the
# verifier's cache are the same object). Bounded; cleared when full.
_ANSWERS: dict[int, tuple[AccessClaims, token_pb2.VerifyResponse]] = {}
_MAX_ANSWERS = 4096
# id of the claims -> the claims, answered once and not remembered. Most never-seen tokens
# are never seen again: keeping every first answer alive (4,096 messages, each its own
# arena) cost a cache miss more than building it. The second sighting is remembered.
_SEEN_ONCE: dict[int, AccessClaims] = {}
# id of a remembered answer -> (the answer, its bytes): what Verify's response serializer
# (``verify_response_bytes``) sends for it, serialized once. Kept and cleared with _ANSWERS.
_ANSWER_BYTES: dict[int, tuple[token_pb2.VerifyResponse, bytes]] = {}
_VALID = VerifyReason.VALID


def _valid_answer(claims: AccessClaims) -> token_pb2.VerifyResponse:
    """The VALID answer, field by field into the message protobuf allocated (in C: faster
    than building it from a dict of fields)."""
    answer = token_pb2.VerifyResponse(result=token_pb2.VERIFY_RESULT_VALID)
    message = answer.claims
    message.issuer = claims.issuer
    message.subject = claims.subject
    message.audience.extend(claims.audience)
    message.expires_at.seconds = claims.expires_at
    issued_at = claims.issued_at
    if issued_at.is_integer():
        message.issued_at.seconds = int(issued_at)
    else:  # to the microsecond, as ``instant``
        whole, rest = divmod(round(issued_at * 1_000_000), 1_000_000)
        message.issued_at.seconds = whole
        message.issued_at.nanos = rest * 1_000
    message.not_before.seconds = claims.not_before
    message.token_id = claims.token_id
    message.session_id = claims.session_id
    message.client_id = claims.client_id
    message.scope.extend(claims.scope)
    message.key_id = claims.key_id
    if claims.extra:
        message.extra.update(dict(claims.extra))
    return answer


def verify_response(verdict: Verification) -> token_pb2.VerifyResponse:
    claims = verdict.claims
    if claims is not None and verdict.reason is _VALID:
        key = id(claims)
        known = _ANSWERS.get(key)
        if known is not None and known[0] is claims:
            return known[1]
        answer = _valid_answer(claims)
        if _SEEN_ONCE.get(key) is claims:
            if len(_ANSWERS) >= _MAX_ANSWERS:
                _ANSWERS.clear()
                _ANSWER_BYTES.clear()
            replaced = _ANSWERS.get(key)
            if replaced is not None:  # another claims object's (its id was reused)
                _ANSWER_BYTES.pop(id(replaced[1]), None)
            _ANSWERS[key] = (claims, answer)
            _ANSWER_BYTES[id(answer)] = (answer, answer.SerializeToString())
        else:
            if len(_SEEN_ONCE) >= _MAX_ANSWERS:
                _SEEN_ONCE.clear()
            _SEEN_ONCE[key] = claims
        return answer
    return token_pb2.VerifyResponse(result=VERIFY_RESULT[verdict.reason], detail=verdict.detail)


def verify_response_bytes(response: token_pb2.VerifyResponse) -> bytes:
    """Verify's response serializer: a remembered answer's bytes are its serialization,
    made once (a repeated token's answer is the same message every time)."""
    known = _ANSWER_BYTES.get(id(response))
    if known is not None and known[0] is response:
        return known[1]
    data: bytes = response.SerializeToString()
    return data


def key_info(record: KeyRecord, policy: KeyPolicy, now: datetime) -> keys_pb2.KeyInfo:
    return keys_pb2.KeyInfo(
        kid=record.kid,
        algorithm=ALGORITHM_TO_PB[record.algorithm],
        state=KEY_STATE_TO_PB[policy.state(record, now)],
        published_at=timestamp(record.published_at),
        activates_at=timestamp(record.activates_at),
        retires_at=timestamp(record.retires_at),
        removed_at=timestamp(policy.removed_at(record)),
        compromised_at=timestamp(record.compromised_at),
    )


def jwks_response(jwks: Jwks) -> keys_pb2.GetJwksResponse:
    return keys_pb2.GetJwksResponse(
        jwks_json=jwks.document.decode(),
        keys=[keys_pb2.Jwk(**dict(jwk)) for jwk in jwks.keys],
        etag=jwks.etag,
        max_age=Duration(seconds=int(jwks.max_age.total_seconds())),
    )


def principal_message(principal: Principal) -> admin_pb2.Principal:
    return admin_pb2.Principal(
        id=principal.id,
        name=principal.name,
        disabled=principal.disabled,
        created_at=timestamp(principal.created_at),
    )


GRANT_TO_PB: dict[GrantType, admin_pb2.GrantType.ValueType] = {
    GrantType.PASSWORD: admin_pb2.GRANT_TYPE_PASSWORD,
    GrantType.CLIENT_CREDENTIALS: admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
    GrantType.TOKEN_EXCHANGE: admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE,
    GrantType.REFRESH_TOKEN: admin_pb2.GRANT_TYPE_REFRESH_TOKEN,
}
GRANT_FROM_PB = {value: key for key, value in GRANT_TO_PB.items()}


def duration(delta: timedelta) -> Duration:
    message = Duration()
    message.FromTimedelta(delta)
    return message


def client_message(client: Client) -> admin_pb2.Client:
    return admin_pb2.Client(
        id=client.id,
        confidential=client.confidential,
        grant_types=sorted(GRANT_TO_PB[g] for g in client.grant_types),
        audiences=client.audiences,
        scopes=sorted(client.scopes),
        default_scopes=client.default_scopes,
        access_token_ttl=duration(client.access_token_ttl),
        session_idle_ttl=duration(client.session_idle_ttl),
        session_absolute_ttl=duration(client.session_absolute_ttl),
        disabled=client.disabled,
        created_at=timestamp(client.created_at),
        allowed_claims=sorted(client.allowed_claims),
        allowed_sensitive_claims=sorted(client.sensitive_claims),
    )


def client_template(message: admin_pb2.Client, defaults: Client) -> Client:
    """A client policy from a request; unset fields take the defaults."""
    grants = set()
    for value in message.grant_types:
        grant = GRANT_FROM_PB.get(value)
        if grant is None:
            raise InvalidArgument(f"unknown grant type {value}")
        grants.add(grant)

    def pick(
        field: Literal["access_token_ttl", "session_idle_ttl", "session_absolute_ttl"],
        fallback: timedelta,
    ) -> timedelta:
        return duration_of(getattr(message, field), field) if message.HasField(field) else fallback

    return replace(
        defaults,
        id=message.id,
        grant_types=frozenset(grants),
        audiences=clean_values(message.audiences, "audience"),
        scopes=frozenset(clean_values(message.scopes, "scope")),
        default_scopes=clean_values(message.default_scopes, "scope"),
        access_token_ttl=pick("access_token_ttl", defaults.access_token_ttl),
        session_idle_ttl=pick("session_idle_ttl", defaults.session_idle_ttl),
        session_absolute_ttl=pick("session_absolute_ttl", defaults.session_absolute_ttl),
        allowed_claims=frozenset(message.allowed_claims),
        sensitive_claims=frozenset(message.allowed_sensitive_claims),
    )
