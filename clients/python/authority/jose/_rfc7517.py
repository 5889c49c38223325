"""Public JWKs (RFC 7517, with RFC 7518 section 6 and RFC 8037 key material), parsed as
strictly as the authority publishes them: the algorithm allow-list, matching kty/crv/alg,
no private members, canonical base64url, RSA of 2048 to 16384 bits, and a ``kid`` that is
the key's RFC 7638 thumbprint (so no key can be published under another key's id)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authority.jose._rfc4648 import NonCanonicalError, b64url_decode
from authority.jose._rfc7518 import SUPPORTED_ALGORITHMS
from authority.jose._rfc7638 import JwkError, jwk_thumbprint

PublicKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

RSA_MIN_BITS = 2048
# Far above anything legitimate; bounds the cost of verifying with a hostile key.
RSA_MAX_BITS = 16384
P256_COORDINATE_BYTES = 32
ED25519_KEY_BYTES = 32
# Members that only a private (or symmetric) JWK carries (RFC 7518 section 6, RFC 8037).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

KTY = {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA"}
CRV = {"EdDSA": "Ed25519", "ES256": "P-256"}


@dataclass(frozen=True, slots=True)
class PublicJwk:
    """A parsed, checked public key: what a ``kid`` resolves to."""

    kid: str
    algorithm: str
    key: PublicKey = field(repr=False, compare=False)
    jwk: Mapping[str, str] = field(repr=False)


def _member(jwk: Mapping[str, Any], member: str) -> bytes:
    value = jwk.get(member)
    if not isinstance(value, str) or not value:
        raise JwkError(f"JWK member {member!r} must be a non-empty base64url string")
    try:
        return b64url_decode(value)
    except NonCanonicalError:
        raise JwkError(f"JWK member {member!r} is not canonical base64url") from None
    except ValueError:
        raise JwkError(f"JWK member {member!r} is not unpadded base64url") from None


def _key_material(jwk: Mapping[str, Any], algorithm: str) -> PublicKey:
    if algorithm == "EdDSA":
        x = _member(jwk, "x")
        if len(x) != ED25519_KEY_BYTES:
            raise JwkError(f"Ed25519 x must be {ED25519_KEY_BYTES} bytes, not {len(x)}")
        return Ed25519PublicKey.from_public_bytes(x)
    if algorithm == "ES256":
        coordinates = []
        for member in ("x", "y"):
            raw = _member(jwk, member)
            if len(raw) != P256_COORDINATE_BYTES:
                raise JwkError(
                    f"P-256 {member} must be {P256_COORDINATE_BYTES} bytes, not {len(raw)}"
                )
            coordinates.append(int.from_bytes(raw, "big"))
        try:
            return ec.EllipticCurvePublicNumbers(
                coordinates[0], coordinates[1], ec.SECP256R1()
            ).public_key()
        except ValueError as exc:
            raise JwkError("JWK x/y is not a point on P-256") from exc
    n_raw, e_raw = _member(jwk, "n"), _member(jwk, "e")
    if n_raw[0] == 0 or e_raw[0] == 0:
        raise JwkError("RSA n and e must use the minimum number of octets")
    n, e = int.from_bytes(n_raw, "big"), int.from_bytes(e_raw, "big")
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise JwkError(
            f"RSA modulus must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {n.bit_length()}"
        )
    if e < 3 or e % 2 == 0:
        raise JwkError("RSA public exponent must be odd and at least 3")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise JwkError("JWK n/e is not a valid RSA public key") from exc


def parse_public_jwk(jwk: Any) -> PublicJwk:
    """Strictly parse one public JWK; raise JwkError on anything the authority would not
    publish. A private member is refused outright: a private JWK reaching a verifier means
    a leak upstream, and trusting it would be worse than failing."""
    if not isinstance(jwk, Mapping):
        raise JwkError("a JWK must be a JSON object")
    leaked = sorted(PRIVATE_MEMBERS.intersection(jwk))
    if leaked:
        raise JwkError(f"JWK contains private members {leaked}; publish public keys only")
    algorithm = jwk.get("alg")
    if not isinstance(algorithm, str) or algorithm not in KTY:
        raise JwkError(f"JWK alg {algorithm!r} is not one of {', '.join(SUPPORTED_ALGORITHMS)}")
    if jwk.get("kty") != KTY[algorithm]:
        raise JwkError(f"JWK kty {jwk.get('kty')!r} does not match alg {algorithm}")
    if algorithm in CRV and jwk.get("crv") != CRV[algorithm]:
        raise JwkError(
            f"JWK crv {jwk.get('crv')!r} does not match alg {algorithm} (expected {CRV[algorithm]})"
        )
    if jwk.get("use", "sig") != "sig":
        raise JwkError(f"JWK use {jwk.get('use')!r} is not 'sig'")
    key = _key_material(jwk, algorithm)
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwkError("JWK lacks a kid")
    thumbprint = jwk_thumbprint(jwk)
    if kid != thumbprint:
        raise JwkError(f"JWK kid {kid!r} is not its RFC 7638 thumbprint {thumbprint!r}")
    return PublicJwk(kid, algorithm, key, {k: v for k, v in jwk.items() if isinstance(v, str)})
