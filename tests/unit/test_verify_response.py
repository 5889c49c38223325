"""Verify's answer for a repeated valid token is built once per claims object, from its
second sighting (a never-seen token's first answer is not kept), and serialized once
(``verify_response_bytes``, Verify's response serializer): the bytes sent are those of
an answer built afresh, and a revocation or expiry still wins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from authority.api import convert
from authority.domain.keys import Algorithm
from authority.domain.revocation import Revocation, RevocationKind
from authority.v1 import token_pb2
from tests.unit import test_verify_fast_path as fast
from tests.unit.test_ext_authz import Fixture


@pytest.fixture(autouse=True)
def _forget_answers() -> Iterator[None]:
    convert._ANSWERS.clear()
    convert._SEEN_ONCE.clear()
    convert._ANSWER_BYTES.clear()
    yield
    convert._ANSWERS.clear()
    convert._SEEN_ONCE.clear()
    convert._ANSWER_BYTES.clear()


def _answer(fx: Fixture, token: str) -> bytes:
    """The bytes Verify sends: the answer through the method's response serializer."""
    return convert.verify_response_bytes(convert.verify_response(fx.verifier.verify(token)))


def test_repeated_answers_are_the_ones_built_afresh() -> None:
    fx = Fixture()
    token = fx.token()
    first = _answer(fx, token)
    assert not convert._ANSWERS  # a first sighting is answered, not remembered
    again = _answer(fx, token)
    assert len(convert._ANSWERS) == 1  # the second is remembered
    third = _answer(fx, token)
    assert len(convert._ANSWER_BYTES) == 1  # serialized once, when remembered
    convert._ANSWERS.clear()
    convert._SEEN_ONCE.clear()
    convert._ANSWER_BYTES.clear()
    afresh = _answer(fx, token)
    assert first == again == third == afresh
    assert token_pb2.VerifyResponse.FromString(first).result == token_pb2.VERIFY_RESULT_VALID


def test_a_revocation_or_expiry_wins_over_a_remembered_answer() -> None:
    fx = Fixture()
    token = fx.token()
    _answer(fx, token)
    _answer(fx, token)  # remembered as VALID
    assert convert._ANSWERS
    now = fx.clock.timestamp()
    fx.revocations.add(Revocation(RevocationKind.SESSION, "s1", now, now + 600))
    revoked = token_pb2.VerifyResponse.FromString(_answer(fx, token))
    assert revoked.result == token_pb2.VERIFY_RESULT_REVOKED

    other = Fixture()
    token = other.token()
    _answer(other, token)
    _answer(other, token)
    other.clock.advance(timedelta(seconds=601))
    expired = token_pb2.VerifyResponse.FromString(_answer(other, token))
    assert expired.result == token_pb2.VERIFY_RESULT_EXPIRED


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_answer_of_the_attack_corpus_is_the_plain_one_on_every_sighting(
    algorithm: Algorithm,
) -> None:
    """First, second and third sightings (answered, remembered, recalled) give the
    message built field by field, or the plain failure, for every hostile token. Every
    one has an answer: a signed claim protobuf cannot carry (a lone surrogate) is
    MALFORMED, never an answer that fails to build."""
    fx = fast.Fixture(algorithm)
    for token in fast.corpus(fx):
        for _ in range(3):
            verdict = fx.verifier.verify(token)
            if verdict.valid:
                expected = fast._plain_response(verdict)
            else:
                expected = token_pb2.VerifyResponse(
                    result=convert.VERIFY_RESULT[verdict.reason], detail=verdict.detail
                )
            answer = convert.verify_response(verdict)
            assert answer == expected, token
            assert answer.SerializeToString(deterministic=True) == expected.SerializeToString(
                deterministic=True
            )
            assert convert.verify_response_bytes(answer) == answer.SerializeToString()


def test_a_signed_lone_surrogate_is_answered_malformed() -> None:
    """The token that once made Verify fail with an internal error (protobuf cannot encode
    the claim): now an answer, on every sighting."""
    fx = Fixture()
    token = fx.token(team="\ud800")
    for _ in range(3):
        answer = token_pb2.VerifyResponse.FromString(_answer(fx, token))
        assert answer.result == token_pb2.VERIFY_RESULT_MALFORMED
        assert "lone UTF-16 surrogate" in answer.detail
        assert not answer.HasField("claims")


def test_the_memos_stay_bounded() -> None:
    fx = Fixture()
    for i in range(2 * convert._MAX_ANSWERS + 3):
        token = fx.token(jti=f"j{i}")
        _answer(fx, token)
        _answer(fx, token)
        assert len(convert._SEEN_ONCE) <= convert._MAX_ANSWERS
        assert len(convert._ANSWERS) <= convert._MAX_ANSWERS
        assert len(convert._ANSWER_BYTES) <= convert._MAX_ANSWERS
