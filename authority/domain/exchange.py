"""RFC 8693 token exchange: what a subject (and actor) token must be, and what the issued
token then holds. Pure rules; verifying the tokens is the verifier's job.

The rules, stricter than RFC 8693 requires:
- Only our own access tokens are accepted as subject or actor tokens
  (``urn:ietf:params:oauth:token-type:access_token``), and only access tokens are issued.
- A client may exchange only a token that was issued *to* it (its ``client_id``) or *for*
  it (its ``aud`` names the client's id): a token it was never meant to see is refused,
  whoever it belongs to. The same holds for the actor token.
- Scopes only narrow: the issued token's scope is a subset of the subject token's (and of
  the client's); no ``scope`` means the subject token's scopes the client may hold.
- The issued token never outlives the subject token or the actor token.
- ``act`` (RFC 8693 section 4.1) names the actor; a subject token that was itself issued
  by an exchange keeps its delegation chain, nested under the new actor, so exchanging
  can never turn a delegated token into a plain one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from authority.domain.errors import InvalidArgument, ScopeNotAllowed, Unauthenticated
from authority.domain.tokens import AccessClaims

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
# Delegation chains longer than this are refused: every hop makes every later token larger.
MAX_ACT_DEPTH = 8


def check_token_types(
    *,
    subject_token: str,
    subject_token_type: str,
    actor_token: str,
    actor_token_type: str,
    requested_token_type: str,
) -> None:
    """RFC 8693 section 2.1's request shape, as far as this server supports it."""
    if not subject_token or not subject_token_type:
        raise InvalidArgument("subject_token and subject_token_type are required")
    if subject_token_type != ACCESS_TOKEN:
        raise InvalidArgument(f"subject_token_type must be {ACCESS_TOKEN}")
    if bool(actor_token) != bool(actor_token_type):
        raise InvalidArgument("actor_token and actor_token_type go together")
    if actor_token and actor_token_type != ACCESS_TOKEN:
        raise InvalidArgument(f"actor_token_type must be {ACCESS_TOKEN}")
    if requested_token_type and requested_token_type != ACCESS_TOKEN:
        raise InvalidArgument(f"only {ACCESS_TOKEN} can be requested")


def check_meant_for(claims: AccessClaims, client_id: str, what: str) -> None:
    """The token was issued to ``client_id`` or for it; else it is not the client's to
    exchange (invalid_grant, saying no more than an invalid token would)."""
    if claims.client_id != client_id and client_id not in claims.audience:
        raise Unauthenticated(f"the {what} was not issued to or for this client")


def exchange_scope(
    requested: Sequence[str], subject: Sequence[str], client_scopes: frozenset[str]
) -> tuple[str, ...]:
    """The issued token's scope. ``requested`` (already within the client's policy) must
    be within the subject token's; nothing requested means the subject token's scopes
    that the client may hold."""
    if not requested:
        return tuple(s for s in subject if s in client_scopes)
    wider = [s for s in requested if s not in subject]
    if wider:
        raise ScopeNotAllowed(f"scope {wider[0]!r} is wider than the subject token's")
    return tuple(requested)


def act_claim(subject: AccessClaims, actor: AccessClaims | None) -> dict[str, Any]:
    """The extra claims of the issued token: ``act`` for the actor, over the subject
    token's own chain; the subject token's chain alone when there is no actor."""
    prior = subject.extra.get("act")
    if prior is not None and (not isinstance(prior, Mapping) or _depth(prior) >= MAX_ACT_DEPTH):
        raise InvalidArgument("the subject token's delegation chain is too long or malformed")
    if actor is None:
        return {"act": dict(prior)} if prior is not None else {}
    act: dict[str, Any] = {"sub": actor.subject, "client_id": actor.client_id}
    if prior is not None:
        act["act"] = dict(prior)
    return {"act": act}


def _depth(act: Mapping[str, Any]) -> int:
    depth = 1
    inner = act.get("act")
    while isinstance(inner, Mapping):
        depth += 1
        if depth > MAX_ACT_DEPTH:
            break
        inner = inner.get("act")
    return depth


def not_after(*tokens: AccessClaims | None) -> int:
    """The latest ``exp`` the issued token may have: none of its sources' is later."""
    return min(t.expires_at for t in tokens if t is not None)
