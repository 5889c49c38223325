"""libsodium's Ed25519 check (the JOSE core's) against OpenSSL's (``cryptography``): the
same verdict for every honestly made signature and every forgery under keys we generate,
and never an acceptance that OpenSSL would refuse."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from authority.jose import _rfc7518, _rfc8032
from authority.jose.jws import verify_ed25519

# The order of the Ed25519 group (RFC 8032, section 5.1).
L = 2**252 + 27742317777372353535851937790883648493
# Encodings of the small-order points, canonical and not (libsodium's blocklist).
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
]

SEEDS = st.binary(min_size=32, max_size=32)
MESSAGES = st.binary(max_size=600)


def _openssl(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _verdicts(public: bytes, message: bytes, signature: bytes) -> tuple[bool, bool, bool]:
    """OpenSSL's, libsodium's on raw bytes, and the core's dispatch (``cryptography`` key)."""
    key = Ed25519PublicKey.from_public_bytes(public)
    return (
        _openssl(public, message, signature),
        verify_ed25519(public, message, signature),
        _rfc7518.verify("EdDSA", message, key, signature),
    )


def _keys(seed: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private, private.public_key().public_bytes_raw()


@settings(max_examples=300, deadline=None)
@given(seed=SEEDS, message=MESSAGES)
def test_honest_signatures_verify_under_both_and_are_the_same_bytes(
    seed: bytes, message: bytes
) -> None:
    private, public = _keys(seed)
    by_openssl = private.sign(message)
    _, secret = crypto_sign_seed_keypair(seed)
    by_sodium = crypto_sign(message, secret)[:64]
    assert by_sodium == by_openssl  # Ed25519 is deterministic
    assert _verdicts(public, message, by_openssl) == (True, True, True)


def _flip(data: bytes, bit: int) -> bytes:
    bit %= 8 * len(data)
    return data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


def _with_s(signature: bytes, s: int) -> bytes:
    return signature[:32] + s.to_bytes(32, "little")


MUTATIONS = st.one_of(
    st.tuples(st.just("flip-signature"), st.integers(0, 511)),
    st.tuples(st.just("flip-message"), st.integers(0, 10_000)),
    st.tuples(st.just("truncate"), st.integers(0, 63)),
    st.tuples(st.just("extend"), st.integers(1, 8)),
    st.tuples(st.just("s-plus-l"), st.integers(1, 15)),
    st.tuples(st.just("s-high"), st.integers(L, 2**256 - 1)),
    st.tuples(st.just("zero"), st.just(0)),
    st.tuples(st.just("small-order-r"), st.integers(0, len(SMALL_ORDER) - 1)),
    st.tuples(st.just("small-order-r-zero-s"), st.integers(0, len(SMALL_ORDER) - 1)),
)


def _mutate(kind: str, n: int, message: bytes, signature: bytes) -> tuple[bytes, bytes]:
    s = int.from_bytes(signature[32:], "little")
    match kind:
        case "flip-signature":
            return message, _flip(signature, n)
        case "flip-message":
            return (_flip(message, n) if message else b"\x00"), signature
        case "truncate":
            return message, signature[:n]
        case "extend":
            return message, signature + bytes(n)
        case "s-plus-l":
            # S + k*L: the same scalar, non-canonical (RFC 8032 demands S < L).
            return message, _with_s(signature, min(s + n * L, 2**256 - 1))
        case "s-high":
            return message, _with_s(signature, n)
        case "zero":
            return message, bytes(64)
        case "small-order-r":
            return message, SMALL_ORDER[n] + signature[32:]
        case _:
            return message, SMALL_ORDER[n] + bytes(32)


@settings(max_examples=600, deadline=None)
@given(seed=SEEDS, message=MESSAGES, mutation=MUTATIONS)
def test_forgeries_are_refused_by_both(
    seed: bytes, message: bytes, mutation: tuple[str, int]
) -> None:
    private, public = _keys(seed)
    forged_message, forged = _mutate(*mutation, message, private.sign(message))
    openssl, sodium, core = _verdicts(public, forged_message, forged)
    assert sodium == core
    assert not (sodium and not openssl)  # never accept what OpenSSL refuses
    if (forged_message, forged) != (message, private.sign(message)):
        assert (openssl, sodium) == (False, False)


@settings(max_examples=300, deadline=None)
@given(
    seed=SEEDS,
    message=MESSAGES,
    signature=st.binary(min_size=0, max_size=80),
)
def test_random_signatures_get_one_verdict(seed: bytes, message: bytes, signature: bytes) -> None:
    _, public = _keys(seed)
    openssl, sodium, core = _verdicts(public, message, signature)
    assert openssl == sodium == core


def test_a_short_signature_never_borrows_bytes_from_the_message() -> None:
    private, public = _keys(bytes(range(32)))
    message = b"x" + b"payload"
    signature = private.sign(message[1:])
    # sig[:63] + message would be crypto_sign_open's sig || payload again.
    assert _verdicts(public, signature[63:] + message[1:], signature[:63]) == (
        False,
        False,
        False,
    )
    assert not verify_ed25519(public, signature[63:] + message[1:], signature[:63])


def test_a_small_order_key_is_refused_by_libsodium() -> None:
    """The one place the libraries differ: a small-order public key (which nothing we
    generate is, and whose signatures anyone can forge) is refused by libsodium, while
    OpenSSL may accept R = identity, S = 0 for it. Stricter, never looser."""
    for public in SMALL_ORDER:
        try:
            Ed25519PublicKey.from_public_bytes(public)
        except ValueError:
            continue
        for message in (b"", b"any message at all"):
            forged = SMALL_ORDER[0] + bytes(32)
            assert not verify_ed25519(public, message, forged)
            assert (
                _rfc7518.verify(
                    "EdDSA", message, Ed25519PublicKey.from_public_bytes(public), forged
                )
                is False
            )


def test_a_key_of_the_wrong_length_is_refused_before_libsodium_reads_it() -> None:
    """PyNaCl passes the key to libsodium unchecked and libsodium reads 32 bytes: a
    shorter key would be read past its end, a longer one truncated."""
    private, public = _keys(bytes(range(32)))
    message = b"payload"
    signature = private.sign(message)
    assert verify_ed25519(public, message, signature)
    for wrong in (public[:31], public + b"\x00", b""):
        assert not verify_ed25519(wrong, message, signature)


@settings(max_examples=300, deadline=None)
@given(seed=SEEDS, message=MESSAGES, mutation=MUTATIONS)
def test_the_bufferless_check_and_pynacls_wrapper_agree(
    seed: bytes, message: bytes, mutation: tuple[str, int]
) -> None:
    """The core calls libsodium through PyNaCl's private cffi module when it is there,
    else PyNaCl's public wrapper: both give one verdict on honest and forged tokens."""
    private, raw = _keys(seed)
    signature = private.sign(message)
    forged_message, forged = _mutate(*mutation, message, signature)
    assert _rfc8032.signed_open is not _rfc8032.open_with_wrapper  # this PyNaCl has it
    for signed in (signature + message, forged + forged_message):
        assert _rfc8032.signed_open(signed, raw) == _rfc8032.open_with_wrapper(signed, raw)
    assert _rfc8032.signed_open(signature + message, raw)
