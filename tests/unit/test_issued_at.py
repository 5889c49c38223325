"""``iat``: whole seconds, or microseconds after a credential change or revocation made in
the same second, and read the same way by every verifier (Verify's claims, the revocation
RPCs' Timestamps, the client library)."""

from __future__ import annotations

import json

from authority_client.verifier import parse_claims as client_parse_claims

from authority.api.convert import instant
from authority.api.revocation_service import seconds_of
from authority.domain.revocation import Revocation, RevocationKind, RevocationSet
from authority.domain.tokens import issued_at, parse_claims

NOW = 1_796_101_656.991_790_4


def test_iat_is_whole_seconds_when_nothing_happened_in_this_second() -> None:
    assert issued_at(NOW) == int(NOW)
    assert isinstance(issued_at(NOW), int)  # JOSE libraries see a plain NumericDate
    assert issued_at(NOW, NOW - 1.5) == int(NOW)  # an older change changes nothing


def test_iat_is_strictly_after_a_change_in_this_second_even_on_a_slower_clock() -> None:
    assert int(NOW) < issued_at(NOW, NOW - 0.5) <= NOW  # this second: to the microsecond
    changed = NOW + 2.5  # recorded by a replica whose clock is 2.5 s ahead
    assert issued_at(NOW, changed) > changed
    assert issued_at(NOW, changed) - changed < 2e-6


def test_a_token_after_a_change_is_not_covered_by_its_subject_revocation_anywhere() -> None:
    """The change's instant goes through the store (microseconds) and the wire (Timestamp);
    the token's iat through JSON and the wire: the order survives every path."""
    for offset in range(-50, 50):
        changed = NOW + offset * 1e-6
        iat = issued_at(NOW, changed)
        view = RevocationSet()
        view.add(Revocation(RevocationKind.SUBJECT, "p", round(changed * 1e6) / 1e6, NOW + 60))
        payload = json.loads(json.dumps({**CLAIMS, "iat": iat}))
        server = parse_claims(payload, "kid")
        client = client_parse_claims(payload, "kid")
        assert server.issued_at == client.issued_at == iat
        assert not view.is_revoked(server)
        over_the_wire = seconds_of(instant(server.issued_at))
        assert not view.is_revoked_identity("j", "s", "p", "", over_the_wire)
        before = seconds_of(instant(changed))
        assert over_the_wire > before


CLAIMS = {
    "iss": "https://authority.test",
    "sub": "p",
    "aud": "api",
    "exp": int(NOW) + 60,
    "nbf": int(NOW),
    "jti": "j",
    "sid": "s",
}
