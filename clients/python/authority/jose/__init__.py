"""The JOSE core: the authority's access-token profile, shared by the server and the client.

One implementation of what both sides must agree on byte for byte, shipped by the
``authority-client`` distribution (which the server depends on). Pure: no grpc, no I/O,
no clock (time is a parameter). Public modules, each with an explicit ``__all__``:

* ``authority.jose.claims`` -- RFC 9068 claims: parsing, then time/issuer/audience checks
  (``now`` and ``leeway`` are arguments); the verdict reasons. Imports no cryptography.
* ``authority.jose.jws`` -- RFC 7515 compact JWS: strict canonical base64url, header
  checks, the algorithm allow-list, low-S ES256, signature verification.
* ``authority.jose.jwk`` -- RFC 7517 public JWKs parsed strictly, RFC 7638 thumbprints.
* ``authority.jose.cache`` -- the bounded dict every verification cache uses.

Verification is two steps: ``jws.parse_compact`` (everything before the key lookup),
then, with the key the caller found by ``kid``, ``jws.verify_signature``; claims are
checked separately (``claims.check_claims``) so cached tokens re-run only that step.
This package owns the verification primitives; signing keys, their generation and
their encryption at rest belong to the server (``authority.crypto``).
"""
