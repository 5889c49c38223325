"""Ed25519 verification (RFC 8032) through libsodium rather than OpenSSL.

libsodium checks an Ed25519 signature in about half the CPU of OpenSSL's (as
``cryptography`` binds it) on the machines we measured, and a cache-miss verify is mostly
that check. The verdicts agree for every token a verifier sees: both reject S >= L, both
recompute R from the same cofactorless equation and compare its canonical encoding byte
for byte; libsodium additionally refuses a small-order or non-canonical public key or R,
which no honestly generated key or signature has (tests/client/test_ed25519_parity.py
proves both directions on random keys and hostile mutations).

PyNaCl (pyca's libsodium binding) exposes no detached verify, so the signature goes in
front of the message as ``crypto_sign_open`` expects; its length is checked first, since a
short signature would otherwise borrow bytes from the message; so is the key's, since
PyNaCl does not check it and libsodium reads 32 bytes. libsodium's ``crypto_sign_open``
is called through PyNaCl's own cffi ``lib`` with no output buffers (libsodium allows NULL
for both and then only verifies): PyNaCl's wrapper allocates and zeroes a buffer the size
of the token, then copies the message back out, about 2 us of a cache miss for nothing.
That module is private to PyNaCl, so without it the wrapper is used (same verdicts:
tests/client/test_ed25519_parity.py runs both).
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import crypto_sign_open  # importing nacl.bindings runs sodium_init
from nacl.exceptions import BadSignatureError

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


def open_with_wrapper(signed: bytes, public: bytes) -> bool:
    """Whether ``signed`` (signature + message) verifies, by PyNaCl's public wrapper."""
    try:
        crypto_sign_open(signed, public)
    except BadSignatureError:
        return False
    return True


signed_open: Callable[[bytes, bytes], bool] = open_with_wrapper
try:  # PyNaCl's cffi module: private, but in every 1.x release; else the wrapper above
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]  # cffi, no stubs
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - depends on the installed PyNaCl
    pass
else:

    def open_without_output(signed: bytes, public: bytes) -> bool:
        """``open_with_wrapper``'s verdict, with no message buffer to allocate and copy."""
        status: int = _lib.crypto_sign_open(_ffi.NULL, _ffi.NULL, signed, len(signed), public)
        return status == 0

    signed_open = open_without_output


def verify_raw(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the 32-byte public key ``public``'s over ``message``."""
    if len(signature) != SIGNATURE_BYTES or len(public) != PUBLIC_KEY_BYTES:
        return False
    return signed_open(signature + message, public)


# id of a key -> (the key, its raw bytes): a verifier checks a handful of keys, and asking
# ``cryptography`` for the bytes costs ~0.3 us a call. Bounded; cleared when full.
_RAW: dict[int, tuple[Ed25519PublicKey, bytes]] = {}
_MAX_RAW = 64


def verify(message: bytes, key: Ed25519PublicKey, signature: bytes) -> bool:
    """``verify_raw`` for a ``cryptography`` public key, its raw bytes read once."""
    known = _RAW.get(id(key))
    if known is None or known[0] is not key:  # new, or another key's reused id
        if len(_RAW) >= _MAX_RAW:
            _RAW.clear()
        known = _RAW[id(key)] = (key, key.public_bytes_raw())
    public = known[1]  # ``verify_raw``, inlined: a frame fewer per cache miss
    if len(signature) != SIGNATURE_BYTES or len(public) != PUBLIC_KEY_BYTES:
        return False
    return signed_open(signature + message, public)
