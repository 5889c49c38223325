"""Signing keys: generation, PKCS#8 (de)serialisation and RFC 7517 / RFC 7638 JWKs.

Every key signs with exactly one ``Algorithm``; the checks here keep a key and its
algorithm consistent at every boundary (storage, JWKS, verification), so a JWK
can never be used to verify with an algorithm it was not published for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
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

PrivateKey: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

RSA_GENERATED_BITS = 3072
RSA_MIN_BITS = 2048
# Far above anything legitimate; bounds the cost of verifying with a hostile key.
RSA_MAX_BITS = 16384
RSA_PUBLIC_EXPONENT = 65537
P256_COORDINATE_BYTES = 32
ED25519_KEY_BYTES = 32

# Members that only a private (or symmetric) JWK carries (RFC 7518 section 6, RFC 8037).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# The members RFC 7638 section 3.2 hashes, per key type.
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "OKP": ("crv", "kty", "x"),
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
}

_KTY = {Algorithm.EDDSA: "OKP", Algorithm.ES256: "EC", Algorithm.RS256: "RSA"}
_CRV = {Algorithm.EDDSA: "Ed25519", Algorithm.ES256: "P-256"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# -- base64url ------------------------------------------------------------------


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: object, member: str) -> bytes:
    """Strict RFC 7515 base64url: no padding, no other alphabet, canonical trailing bits."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"JWK member {member!r} must be a non-empty base64url string")
    if not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise InvalidArgument(f"JWK member {member!r} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"JWK member {member!r} is not unpadded base64url") from exc
    if _b64url_encode(data) != value:
        raise InvalidArgument(f"JWK member {member!r} is not canonical base64url")
    return data


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
    """RFC 7638 SHA-256 thumbprint: required members only, sorted, no whitespace."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise InvalidArgument(f"unsupported JWK key type {kty!r}")
    required: dict[str, str] = {}
    for member in _THUMBPRINT_MEMBERS[kty]:
        value = jwk.get(member)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{kty} JWK lacks the string member {member!r}")
        required[member] = value
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: PrivateKey | PublicKey, algorithm: Algorithm) -> dict[str, str]:
    """The public JWK published in the JWKS; ``kid`` is its RFC 7638 thumbprint."""
    algorithm = _algorithm(algorithm)
    _check_key(key, algorithm)
    public = _public_of(key)
    jwk: dict[str, str] = {"kty": _KTY[algorithm]}
    if isinstance(public, Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk |= {"crv": _CRV[algorithm], "x": _b64url_encode(raw)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        jwk |= {
            "crv": _CRV[algorithm],
            "x": _b64url_encode(numbers.x.to_bytes(P256_COORDINATE_BYTES, "big")),
            "y": _b64url_encode(numbers.y.to_bytes(P256_COORDINATE_BYTES, "big")),
        }
    else:
        rsa_numbers = public.public_numbers()
        jwk |= {
            "n": _b64url_encode(_int_to_bytes(rsa_numbers.n)),
            "e": _b64url_encode(_int_to_bytes(rsa_numbers.e)),
        }
    jwk |= {"alg": algorithm.value, "use": "sig"}
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def _public_of(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return key
    return key.public_key()


def public_key_from_jwk(jwk: Mapping[str, str]) -> PublicKey:
    """Strictly parse a public JWK for verification.

    Requires ``alg`` and ``kid``, checks kty/crv/alg agree with each other and with the
    key material, refuses private members outright (a private JWK reaching a verifier
    means a leak upstream), and requires ``kid`` to be the thumbprint so a key cannot be
    published under another key's id.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidArgument("a JWK must be a JSON object")
    leaked = sorted(PRIVATE_JWK_MEMBERS.intersection(jwk))
    if leaked:
        raise InvalidArgument(f"JWK contains private members {leaked}; publish public keys only")
    alg_value = jwk.get("alg")
    try:
        algorithm = Algorithm(alg_value) if isinstance(alg_value, str) else None
    except ValueError:
        algorithm = None
    if algorithm is None:
        allowed = ", ".join(a.value for a in Algorithm)
        raise InvalidArgument(f"JWK alg {alg_value!r} is not one of {allowed}")
    kty = jwk.get("kty")
    if kty != _KTY[algorithm]:
        raise InvalidArgument(f"JWK kty {kty!r} does not match alg {algorithm.value}")
    if algorithm in _CRV and jwk.get("crv") != _CRV[algorithm]:
        raise InvalidArgument(
            f"JWK crv {jwk.get('crv')!r} does not match alg {algorithm.value} "
            f"(expected {_CRV[algorithm]})"
        )
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise InvalidArgument(f"JWK use {use!r} is not 'sig'")

    key = _public_key_material(jwk, algorithm)

    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidArgument("JWK lacks a kid")
    thumbprint = jwk_thumbprint(jwk)
    if kid != thumbprint:
        raise InvalidArgument(f"JWK kid {kid!r} is not its RFC 7638 thumbprint {thumbprint!r}")
    return key


def _public_key_material(jwk: Mapping[str, str], algorithm: Algorithm) -> PublicKey:
    if algorithm is Algorithm.EDDSA:
        x = _b64url_decode(jwk.get("x"), "x")
        if len(x) != ED25519_KEY_BYTES:
            raise InvalidArgument(f"Ed25519 x must be {ED25519_KEY_BYTES} bytes, not {len(x)}")
        return Ed25519PublicKey.from_public_bytes(x)
    if algorithm is Algorithm.ES256:
        coordinates = []
        for member in ("x", "y"):
            raw = _b64url_decode(jwk.get(member), member)
            if len(raw) != P256_COORDINATE_BYTES:
                raise InvalidArgument(
                    f"P-256 {member} must be {P256_COORDINATE_BYTES} bytes, not {len(raw)}"
                )
            coordinates.append(int.from_bytes(raw, "big"))
        try:
            return ec.EllipticCurvePublicNumbers(
                coordinates[0], coordinates[1], ec.SECP256R1()
            ).public_key()
        except ValueError as exc:
            raise InvalidArgument("JWK x/y is not a point on P-256") from exc
    # RS256
    n_raw = _b64url_decode(jwk.get("n"), "n")
    e_raw = _b64url_decode(jwk.get("e"), "e")
    if n_raw[0] == 0 or e_raw[0] == 0:
        raise InvalidArgument("RSA n and e must use the minimum number of octets")
    n = int.from_bytes(n_raw, "big")
    e = int.from_bytes(e_raw, "big")
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise InvalidArgument(
            f"RSA modulus must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {n.bit_length()}"
        )
    if e < 3 or e % 2 == 0:
        raise InvalidArgument("RSA public exponent must be odd and at least 3")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise InvalidArgument("JWK n/e is not a valid RSA public key") from exc
