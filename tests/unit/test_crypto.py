"""authority.crypto: RFC vectors, interoperability with an independent JOSE library,
strict JWK parsing, envelope integrity, and KEK loading."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from authority.crypto import (
    EnvelopeError,
    Kek,
    KekRing,
    envelope_kek_id,
    generate_private_key,
    jwk_thumbprint,
    load_kek,
    private_key_from_bytes,
    private_key_to_bytes,
    public_jwk,
    public_key_from_jwk,
)
from authority.crypto.signing_keys import PRIVATE_JWK_MEMBERS, PrivateKey, PublicKey
from authority.domain.errors import ErrorCode, InvalidArgument
from authority.domain.keys import Algorithm

# RFC 7638 section 3.1, verbatim.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
    "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcR"
    "wr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# RFC 8037 appendix A.3.
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

ALGORITHMS = list(Algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_kid(jwk: dict[str, str]) -> dict[str, str]:
    """The JWK with its kid recomputed, so a test isolates one defect at a time."""
    return {**jwk, "kid": jwk_thumbprint(jwk)}


@pytest.fixture(scope="module")
def keys() -> dict[Algorithm, PrivateKey]:
    """One key per algorithm (RSA-3072 generation is slow enough to share)."""
    return {alg: generate_private_key(alg) for alg in ALGORITHMS}


# -- thumbprints ------------------------------------------------------------------


def test_rfc7638_rsa_thumbprint() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == RFC7638_THUMBPRINT


def test_rfc8037_ed25519_thumbprint() -> None:
    assert jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT


def test_rfc7638_key_parses_when_kid_is_its_thumbprint() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": RFC7638_THUMBPRINT}
    key = public_key_from_jwk(jwk)
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048


def test_thumbprint_rejects_unknown_kty_and_missing_members() -> None:
    with pytest.raises(InvalidArgument, match="key type"):
        jwk_thumbprint({"kty": "oct", "k": "AAAA"})
    with pytest.raises(InvalidArgument, match="'y'"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AAAA"})


# -- generated keys and JWKs ------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generated_key_shape(alg: Algorithm, keys: dict[Algorithm, PrivateKey]) -> None:
    key = keys[alg]
    if alg is Algorithm.ES256:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP256R1)
    elif alg is Algorithm.RS256:
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 3072
        assert key.private_numbers().public_numbers.e == 65537


# RFC 9864 deprecates "EdDSA" in favour of "Ed25519"; joserfc warns, but verifies.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_public_jwk_interoperates(alg: Algorithm, keys: dict[Algorithm, PrivateKey]) -> None:
    key = keys[alg]
    jwk = public_jwk(key, alg)

    assert not PRIVATE_JWK_MEMBERS & jwk.keys()
    assert jwk["alg"] == alg.value
    assert jwk["use"] == "sig"
    assert jwk["kid"] == jwk_thumbprint(jwk)
    assert all("=" not in v for v in jwk.values())
    # The JWK of the public half is the same JWK.
    assert public_jwk(key.public_key(), alg) == jwk

    parsed = public_key_from_jwk(jwk)
    assert public_jwk(parsed, alg) == jwk

    # Signed by PyJWT with our key object, verified by joserfc from our JWK alone.
    token = jwt.encode({"sub": "alice"}, key, algorithm=alg.value, headers={"kid": jwk["kid"]})
    key_set = KeySet.import_key_set({"keys": [dict(jwk)]})
    decoded = jose_jwt.decode(token, key_set, algorithms=[alg.value])
    assert decoded.claims == {"sub": "alice"}
    assert decoded.header["kid"] == jwk["kid"]
    # And by PyJWT from the key we parsed back.
    assert jwt.decode(token, parsed, algorithms=[alg.value]) == {"sub": "alice"}


def test_ec_coordinates_are_left_padded() -> None:
    # Generate until a coordinate has a leading zero byte (about 1 in 128 keys).
    for _ in range(5000):
        key = generate_private_key(Algorithm.ES256)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        numbers = key.public_key().public_numbers()
        if numbers.x < 2**248 or numbers.y < 2**248:
            break
    else:
        pytest.skip("no short coordinate found")
    jwk = public_jwk(key, Algorithm.ES256)
    for member in ("x", "y"):
        assert len(base64.urlsafe_b64decode(jwk[member] + "=")) == 32
    parsed = public_key_from_jwk(jwk)
    assert isinstance(parsed, ec.EllipticCurvePublicKey)
    assert parsed.public_numbers() == numbers


def test_public_jwk_refuses_mismatched_algorithm(keys: dict[Algorithm, PrivateKey]) -> None:
    with pytest.raises(InvalidArgument, match="EdDSA needs an Ed25519 key"):
        public_jwk(keys[Algorithm.RS256], Algorithm.EDDSA)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidArgument, match="P-256"):
        public_jwk(p384, Algorithm.ES256)


# -- PKCS#8 -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_private_key_bytes_round_trip(alg: Algorithm, keys: dict[Algorithm, PrivateKey]) -> None:
    key = keys[alg]
    data = private_key_to_bytes(key)
    loaded = private_key_from_bytes(data, alg)
    assert public_jwk(loaded, alg) == public_jwk(key, alg)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_private_key_from_bytes_rejects_other_algorithms(
    alg: Algorithm, keys: dict[Algorithm, PrivateKey]
) -> None:
    data = private_key_to_bytes(keys[alg])
    for other in ALGORITHMS:
        if other is not alg:
            with pytest.raises(InvalidArgument, match=f"{other.value} needs"):
                private_key_from_bytes(data, other)


def test_unknown_algorithm_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="unsupported algorithm 'HS256'"):
        generate_private_key("HS256")  # type: ignore[arg-type]
    # The stored string form is accepted.
    key = generate_private_key("EdDSA")  # type: ignore[arg-type]
    assert public_jwk(key, "EdDSA")["alg"] == "EdDSA"  # type: ignore[arg-type]


def test_private_key_from_bytes_rejects_weak_or_foreign_keys() -> None:
    p384 = private_key_to_bytes(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(InvalidArgument, match="P-256"):
        private_key_from_bytes(p384, Algorithm.ES256)
    rsa1024 = private_key_to_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(InvalidArgument, match="at least 2048"):
        private_key_from_bytes(rsa1024, Algorithm.RS256)
    with pytest.raises(InvalidArgument, match="PKCS#8"):
        private_key_from_bytes(b"not a key", Algorithm.EDDSA)


# -- strict JWK parsing -------------------------------------------------------------


@pytest.fixture(scope="module")
def jwks(keys: dict[Algorithm, PrivateKey]) -> dict[Algorithm, dict[str, str]]:
    return {alg: public_jwk(key, alg) for alg, key in keys.items()}


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("member", sorted(PRIVATE_JWK_MEMBERS))
def test_jwk_with_private_members_is_rejected(
    alg: Algorithm, member: str, jwks: dict[Algorithm, dict[str, str]]
) -> None:
    with pytest.raises(InvalidArgument, match="private members"):
        public_key_from_jwk({**jwks[alg], member: "AQAB"})


def test_jwk_with_real_private_jwk_is_rejected(keys: dict[Algorithm, PrivateKey]) -> None:
    # A complete private JWK as another library exports it.
    key = keys[Algorithm.RS256]
    assert isinstance(key, rsa.RSAPrivateKey)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    with pytest.raises(
        InvalidArgument, match=r"private members \['d', 'dp', 'dq', 'p', 'q', 'qi'\]"
    ):
        public_key_from_jwk({**jwk, "alg": "RS256"})


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_jwk_kid_must_be_thumbprint(alg: Algorithm, jwks: dict[Algorithm, dict[str, str]]) -> None:
    other = jwks[Algorithm.EDDSA if alg is not Algorithm.EDDSA else Algorithm.ES256]
    with pytest.raises(InvalidArgument, match="thumbprint"):
        public_key_from_jwk({**jwks[alg], "kid": other["kid"]})
    missing = dict(jwks[alg])
    del missing["kid"]
    with pytest.raises(InvalidArgument, match="kid"):
        public_key_from_jwk(missing)


def test_jwk_rsa_1024_is_rejected() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    numbers = weak.public_numbers()
    jwk = with_kid(
        {
            "kty": "RSA",
            "alg": "RS256",
            "n": b64url(numbers.n.to_bytes(128, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big")),
        }
    )
    with pytest.raises(InvalidArgument, match="2048"):
        public_key_from_jwk(jwk)


def test_jwk_rsa_non_minimal_modulus_is_rejected(jwks: dict[Algorithm, dict[str, str]]) -> None:
    jwk = jwks[Algorithm.RS256]
    padded = b"\x00" + base64.urlsafe_b64decode(jwk["n"] + "==")
    with pytest.raises(InvalidArgument, match="minimum number of octets"):
        public_key_from_jwk(with_kid({**jwk, "n": b64url(padded)}))


def test_jwk_ec_wrong_curve_is_rejected(jwks: dict[Algorithm, dict[str, str]]) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    jwk = with_kid(
        {
            "kty": "EC",
            "crv": "P-384",
            "alg": "ES256",
            "x": b64url(p384.x.to_bytes(48, "big")),
            "y": b64url(p384.y.to_bytes(48, "big")),
        }
    )
    with pytest.raises(InvalidArgument, match="crv 'P-384'"):
        public_key_from_jwk(jwk)
    # P-384-sized coordinates labelled P-256 are caught too.
    with pytest.raises(InvalidArgument, match="32 bytes"):
        public_key_from_jwk(with_kid({**jwk, "crv": "P-256"}))
    # As is a point that is not on the curve.
    good = jwks[Algorithm.ES256]
    y = int.from_bytes(base64.urlsafe_b64decode(good["y"] + "="), "big") ^ 1
    with pytest.raises(InvalidArgument, match="not a point on P-256"):
        public_key_from_jwk(with_kid({**good, "y": b64url(y.to_bytes(32, "big"))}))


@pytest.mark.parametrize(
    ("alg", "changes", "message"),
    [
        (Algorithm.EDDSA, {"alg": "ES256"}, "kty 'OKP' does not match alg ES256"),
        (Algorithm.ES256, {"alg": "RS256"}, "kty 'EC' does not match alg RS256"),
        (Algorithm.RS256, {"alg": "EdDSA"}, "kty 'RSA' does not match alg EdDSA"),
        (Algorithm.RS256, {"alg": "PS256"}, "alg 'PS256' is not one of"),
        (Algorithm.EDDSA, {"alg": "none"}, "alg 'none' is not one of"),
        (Algorithm.EDDSA, {"crv": "Ed448"}, "crv 'Ed448'"),
        (Algorithm.EDDSA, {"crv": "X25519"}, "crv 'X25519'"),
        (Algorithm.ES256, {"kty": "RSA"}, "kty 'RSA' does not match alg ES256"),
        (Algorithm.ES256, {"use": "enc"}, "use 'enc'"),
    ],
)
def test_jwk_inconsistent_metadata_is_rejected(
    alg: Algorithm,
    changes: dict[str, str],
    message: str,
    jwks: dict[Algorithm, dict[str, str]],
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        public_key_from_jwk({**jwks[alg], **changes})


def test_jwk_without_alg_is_rejected(jwks: dict[Algorithm, dict[str, str]]) -> None:
    jwk = dict(jwks[Algorithm.EDDSA])
    del jwk["alg"]
    with pytest.raises(InvalidArgument, match="alg None"):
        public_key_from_jwk(jwk)


@pytest.mark.parametrize(
    "bad",
    [
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=",  # padding
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo",  # standard alphabet
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUR p",  # whitespace
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURp",  # non-zero trailing bits
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURoAA",  # 33 bytes
        "A",  # impossible length
        "",
    ],
)
def test_jwk_bad_base64url_is_rejected(bad: str) -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": bad}
    with pytest.raises(InvalidArgument, match=r"'x'|32 bytes"):
        public_key_from_jwk(with_kid(jwk))


def test_rfc8037_key_parses() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": RFC8037_X}
    key: PublicKey = public_key_from_jwk(with_kid(jwk))
    assert public_jwk(key, Algorithm.EDDSA)["kid"] == RFC8037_THUMBPRINT


# -- envelope ---------------------------------------------------------------------

AAD = b"signing-key:kid-123"


@pytest.fixture
def kek() -> Kek:
    return Kek.from_secret(os.urandom(32))


def test_envelope_round_trip(kek: Kek) -> None:
    ring = KekRing(kek)
    blob = ring.wrap(b"private key bytes", aad=AAD)
    assert ring.unwrap(blob, aad=AAD) == b"private key bytes"
    assert ring.current_id == kek.id
    assert envelope_kek_id(blob) == kek.id
    assert b"private key bytes" not in blob
    # Fresh DEK and nonces every time.
    assert ring.wrap(b"private key bytes", aad=AAD) != blob
    assert ring.unwrap(ring.wrap(b"", aad=b""), aad=b"") == b""


def test_envelope_every_byte_flip_is_detected(kek: Kek) -> None:
    ring = KekRing(kek)
    blob = ring.wrap(b"x" * 40, aad=AAD)
    for position in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            with pytest.raises(EnvelopeError) as info:
                ring.unwrap(bytes(tampered), aad=AAD)
            assert info.value.code is ErrorCode.INTERNAL


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_envelope_truncation_extension_and_garbage_fail(data: st.DataObject) -> None:
    ring = KekRing(Kek.from_secret(b"k" * 32))
    blob = ring.wrap(data.draw(st.binary(max_size=64)), aad=AAD)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(EnvelopeError):
        ring.unwrap(blob[:cut], aad=AAD)
    with pytest.raises(EnvelopeError):
        ring.unwrap(blob + data.draw(st.binary(min_size=1, max_size=8)), aad=AAD)
    garbage = data.draw(st.binary(max_size=200))
    with pytest.raises(EnvelopeError):
        ring.unwrap(garbage, aad=AAD)


def test_envelope_wrong_aad_fails(kek: Kek) -> None:
    ring = KekRing(kek)
    blob = ring.wrap(b"secret", aad=AAD)
    with pytest.raises(EnvelopeError, match="aad"):
        ring.unwrap(blob, aad=b"signing-key:kid-124")
    with pytest.raises(EnvelopeError):
        ring.unwrap(blob, aad=b"")


def test_envelope_unknown_kek_names_the_id_not_the_secret(kek: Kek) -> None:
    other = Kek.from_secret(os.urandom(32))
    blob = KekRing(other).wrap(b"secret", aad=AAD)
    with pytest.raises(EnvelopeError) as info:
        KekRing(kek).unwrap(blob, aad=AAD)
    message = str(info.value)
    assert other.id in message
    assert other.secret.hex() not in message
    assert b64url(other.secret) not in message


def test_kek_ring_rotation() -> None:
    old = Kek.from_secret(os.urandom(32))
    new = Kek.from_secret(os.urandom(32))
    old_blob = KekRing(old).wrap(b"secret", aad=AAD)

    ring = KekRing(current=new, previous=[old])
    assert ring.current_id == new.id
    assert ring.ids == (new.id, old.id)
    assert ring.unwrap(old_blob, aad=AAD) == b"secret"
    assert envelope_kek_id(ring.wrap(b"secret", aad=AAD)) == new.id

    moved = ring.rewrap(old_blob, aad=AAD)
    assert envelope_kek_id(moved) == new.id
    assert KekRing(new).unwrap(moved, aad=AAD) == b"secret"
    with pytest.raises(EnvelopeError, match=new.id):
        KekRing(old).unwrap(moved, aad=AAD)
    with pytest.raises(EnvelopeError, match="aad"):
        ring.rewrap(old_blob, aad=b"other")


def test_kek_ring_refuses_conflicting_ids() -> None:
    a = Kek(id="same", secret=b"a" * 32)
    b = Kek(id="same", secret=b"b" * 32)
    with pytest.raises(InvalidArgument, match="'same'"):
        KekRing(a, previous=[b])
    assert KekRing(a, previous=[a]).ids == ("same",)


def test_kek_validation_and_repr() -> None:
    secret = os.urandom(32)
    kek = Kek.from_secret(secret)
    assert kek == Kek.from_secret(secret)
    assert len(kek.id) == 16
    assert Kek.from_secret(os.urandom(32)).id != kek.id
    for text in (repr(kek), str(kek), repr(KekRing(kek))):
        assert kek.id in text
        assert secret.hex() not in text
        assert secret.hex().upper() not in text
        assert b64url(secret) not in text
        assert base64.b64encode(secret).decode() not in text
        assert repr(secret) not in text
    with pytest.raises(InvalidArgument, match="32 bytes"):
        Kek.from_secret(b"short")
    with pytest.raises(InvalidArgument, match="32 bytes"):
        Kek(id="k1", secret=b"x" * 31)
    with pytest.raises(InvalidArgument, match="id"):
        Kek(id="has space", secret=b"x" * 32)


# -- KEK sources ------------------------------------------------------------------


def test_load_kek_from_env_accepts_both_alphabets_with_or_without_padding() -> None:
    secret = bytes(range(200, 232))  # encodes with both '+'/'/' and '-'/'_' characters
    standard = base64.b64encode(secret).decode()
    assert "+" in standard or "/" in standard
    variants = [
        standard,
        standard.rstrip("="),
        b64url(secret),
        b64url(secret) + "=",
        f" {standard}\n",
    ]
    for value in variants:
        kek = load_kek(env_value=value, file=None, generate_into=None)
        assert kek == Kek.from_secret(secret)


def test_load_kek_from_file(tmp_path: Path) -> None:
    secret = os.urandom(32)
    text_file = tmp_path / "kek.txt"
    text_file.write_text(base64.b64encode(secret).decode() + "\n")
    raw_file = tmp_path / "kek.bin"
    raw_file.write_bytes(secret)
    expected = Kek.from_secret(secret)
    assert load_kek(env_value=None, file=text_file, generate_into=None) == expected
    assert load_kek(env_value=None, file=raw_file, generate_into=None) == expected
    # A missing file is named.
    with pytest.raises(InvalidArgument, match="missing"):
        load_kek(env_value=None, file=tmp_path / "missing", generate_into=None)


def test_load_kek_generates_once_with_private_permissions(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "authority"
    first = load_kek(env_value=None, file=None, generate_into=data_dir)
    path = data_dir / "kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert path.read_text().strip() == b64url(first.secret)
    assert [p.name for p in data_dir.iterdir()] == ["kek"]  # no temporary file left behind

    second = load_kek(env_value=None, file=None, generate_into=data_dir)
    assert second.id == first.id
    assert second == first
    # The generated file also works as AUTHORITY_KEK_FILE.
    assert load_kek(env_value=None, file=path, generate_into=None) == first


def test_load_kek_rejects_world_readable_generated_file(tmp_path: Path) -> None:
    load_kek(env_value=None, file=None, generate_into=tmp_path)
    path = tmp_path / "kek"
    path.chmod(0o644)
    with pytest.raises(InvalidArgument, match=r"chmod 600") as info:
        load_kek(env_value=None, file=None, generate_into=tmp_path)
    assert str(path) in str(info.value)
    assert path.read_text().strip() not in str(info.value)


def test_load_kek_rejects_both_sources(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="set AUTHORITY_KEK or AUTHORITY_KEK_FILE, not both"):
        load_kek(env_value=b64url(os.urandom(32)), file=tmp_path / "kek", generate_into=tmp_path)


def test_load_kek_without_any_source_says_what_to_set() -> None:
    with pytest.raises(InvalidArgument, match="AUTHORITY_KEK"):
        load_kek(env_value=None, file=None, generate_into=None)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_load_kek_wrong_length_never_echoes_the_value(size: int, tmp_path: Path) -> None:
    value = b64url(os.urandom(size) if size else b"")
    value = value or "    "
    with pytest.raises(InvalidArgument, match="AUTHORITY_KEK") as info:
        load_kek(env_value=value, file=None, generate_into=None)
    if value.strip():
        assert value not in str(info.value)

    path = tmp_path / "kek"
    path.write_text(value + "\n")
    with pytest.raises(InvalidArgument) as info:
        load_kek(env_value=None, file=path, generate_into=None)
    assert str(path) in str(info.value)
    if value.strip():
        assert value not in str(info.value)


@pytest.mark.parametrize("value", ["not base64!", "ñ" * 43, "QUFB" * 11 + "=A", "a" * 45])
def test_load_kek_bad_encoding_never_echoes_the_value(value: str) -> None:
    with pytest.raises(InvalidArgument, match="AUTHORITY_KEK") as info:
        load_kek(env_value=value, file=None, generate_into=None)
    assert value not in str(info.value)
