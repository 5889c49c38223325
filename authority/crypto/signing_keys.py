"""Signing keys: generation, PKCS#8 (de)serialisation and RFC 7517 / RFC 7638 JWKs.

Every key signs with exactly one ``Algorithm``; the checks here keep a key and its
algorithm consistent at every boundary (storage, JWKS, verification), so a JWK
can never be used to verify with an algorithm it was not published for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from authority.domain.errors import InvalidArgument
from authority.domain.keys import Algorithm
from authority.jose.jwk import (
    P256_COORDINATE_BYTES,
    PRIVATE_MEMBERS,
    RSA_MIN_BITS,
    JwkError,
    PublicKey,
    parse_public_jwk,
)
from authority.jose.jwk import jwk_thumbprint as _thumbprint
from authority.jose.jws import b64url_encode

PrivateKey: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

RSA_GENERATED_BITS = 3072
RSA_PUBLIC_EXPONENT = 65537
PRIVATE_JWK_MEMBERS = PRIVATE_MEMBERS

_KTY = {Algorithm.EDDSA: "OKP", Algorithm.ES256: "EC", Algorithm.RS256: "RSA"}
_CRV = {Algorithm.EDDSA: "Ed25519", Algorithm.ES256: "P-256"}


def _int_to_bytes(value: int) -> bytes:
    """Minimal big-endian octets, as RFC 7518 section 6.3.1 requires for n and e."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


# -- keys -----------------------------------------------------------------------


def _algorithm(value: Algorithm | str) -> Algorithm:
    """Accept the enum or its stored string form; anything else is a caller error."""
    try:
        return Algorithm(value)
    except ValueError:
        raise InvalidArgument(f"unsupported algorithm {value!r}") from None


def generate_private_key(algorithm: Algorithm) -> PrivateKey:
    """A fresh key for ``algorithm`` (Ed25519, P-256, or RSA-3072 with e=65537)."""
    algorithm = _algorithm(algorithm)
    if algorithm is Algorithm.EDDSA:
        return Ed25519PrivateKey.generate()
    if algorithm is Algorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is Algorithm.RS256:
        return rsa.generate_private_key(
            public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_GENERATED_BITS
        )
    raise InvalidArgument(f"unsupported algorithm {algorithm!r}")


def _check_key(key: PrivateKey | PublicKey, algorithm: Algorithm) -> None:
    """Raise InvalidArgument unless ``key`` has the type (and size or curve) ``algorithm`` needs."""
    algorithm = _algorithm(algorithm)
    if algorithm is Algorithm.EDDSA:
        if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
            raise InvalidArgument(f"EdDSA needs an Ed25519 key, not {_describe(key)}")
    elif algorithm is Algorithm.ES256:
        if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            raise InvalidArgument(f"ES256 needs a P-256 key, not {_describe(key)}")
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidArgument(f"ES256 needs curve P-256, not {key.curve.name}")
    elif algorithm is Algorithm.RS256:
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise InvalidArgument(f"RS256 needs an RSA key, not {_describe(key)}")
        if key.key_size < RSA_MIN_BITS:
            raise InvalidArgument(
                f"RS256 needs an RSA key of at least {RSA_MIN_BITS} bits, not {key.key_size}"
            )
    else:
        raise InvalidArgument(f"unsupported algorithm {algorithm!r}")


def _describe(key: object) -> str:
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an EC {key.curve.name} key"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"an RSA-{key.key_size} key"
    return f"a {type(key).__name__}"


def private_key_to_bytes(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER: only ever handed straight to the envelope, never stored as is."""
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def private_key_from_bytes(data: bytes, algorithm: Algorithm) -> PrivateKey:
    """Load PKCS#8 DER and check that it is a key ``algorithm`` may sign with."""
    algorithm = _algorithm(algorithm)
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidArgument("the private key is not valid unencrypted PKCS#8 DER") from exc
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidArgument(f"{algorithm} needs a different key type, not {_describe(key)}")
    _check_key(key, algorithm)
    return key


# -- JWKs -----------------------------------------------------------------------


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint (the JOSE core's), with the server's error type."""
    try:
        return _thumbprint(jwk)
    except JwkError as exc:
        raise InvalidArgument(str(exc)) from exc


def public_jwk(key: PrivateKey | PublicKey, algorithm: Algorithm) -> dict[str, str]:
    """The public JWK published in the JWKS; ``kid`` is its RFC 7638 thumbprint."""
    algorithm = _algorithm(algorithm)
    _check_key(key, algorithm)
    public = _public_of(key)
    jwk: dict[str, str] = {"kty": _KTY[algorithm]}
    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk |= {"crv": _CRV[algorithm], "x": b64url_encode(raw)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        jwk |= {
            "crv": _CRV[algorithm],
            "x": b64url_encode(numbers.x.to_bytes(P256_COORDINATE_BYTES, "big")),
            "y": b64url_encode(numbers.y.to_bytes(P256_COORDINATE_BYTES, "big")),
        }
    else:
        rsa_numbers = public.public_numbers()
        jwk |= {
            "n": b64url_encode(_int_to_bytes(rsa_numbers.n)),
            "e": b64url_encode(_int_to_bytes(rsa_numbers.e)),
        }
    jwk |= {"alg": algorithm.value, "use": "sig"}
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def _public_of(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return key
    return key.public_key()


def public_key_from_jwk(jwk: Mapping[str, str]) -> PublicKey:
    """Strictly parse a public JWK for verification (the JOSE core's ``parse_public_jwk``:
    the same checks every local verifier applies), with the server's error type."""
    try:
        return parse_public_jwk(jwk).key
    except JwkError as exc:
        raise InvalidArgument(str(exc)) from exc
