"""Verify's answer for a repeated valid token is built once per claims object: the
answers are byte-identical to ones built afresh, and a revocation or expiry still wins."""

from __future__ import annotations

from datetime import timedelta

from authority.api import convert
from authority.domain.revocation import Revocation, RevocationKind
from authority.v1 import token_pb2
from tests.unit.test_ext_authz import Fixture


def _answer(fx: Fixture, token: str) -> bytes:
    return convert.verify_response(fx.verifier.verify(token)).SerializeToString()


def test_repeated_answers_are_the_ones_built_afresh() -> None:
    fx = Fixture()
    token = fx.token()
    first = _answer(fx, token)
    again = _answer(fx, token)
    convert._ANSWERS.clear()
    afresh = _answer(fx, token)
    assert first == again == afresh
    assert token_pb2.VerifyResponse.FromString(first).result == token_pb2.VERIFY_RESULT_VALID


def test_a_revocation_or_expiry_wins_over_a_remembered_answer() -> None:
    fx = Fixture()
    token = fx.token()
    _answer(fx, token)  # remembered as VALID
    now = fx.clock.timestamp()
    fx.revocations.add(Revocation(RevocationKind.SESSION, "s1", now, now + 600))
    revoked = token_pb2.VerifyResponse.FromString(_answer(fx, token))
    assert revoked.result == token_pb2.VERIFY_RESULT_REVOKED

    other = Fixture()
    token = other.token()
    _answer(other, token)
    other.clock.advance(timedelta(seconds=601))
    expired = token_pb2.VerifyResponse.FromString(_answer(other, token))
    assert expired.result == token_pb2.VERIFY_RESULT_EXPIRED
