"""Random identifiers (token ids, session ids, event ids) from a buffered CSPRNG.

``secrets.token_urlsafe`` reads ``os.urandom`` on every call, and CPython releases the GIL
around that system call: on a server whose SQLite and hashing threads also want the GIL,
each read is a chance to lose it and wait for it back. A client-credentials Issue makes
two such reads (its ``jti`` and its event's id); measured with ``py-spy --gil`` against
plain sampling, the event loop spent ~15% of its wall time waiting in them. Here the
bytes come from one ``os.urandom`` read per 4 KiB of identifiers, so the loop keeps the
GIL. Still the kernel's CSPRNG, byte for byte; only the read is batched.

Only identifiers come from here, never secrets (refresh tokens, client secrets, keys,
nonces): those read ``os.urandom`` (``secrets``) directly, so no future secret ever waits
in this process's memory. A forked child drops the buffer it inherited, so parent and
child never hand out the same bytes.
"""

from __future__ import annotations

import base64
import os
import threading

_BUFFER_BYTES = 4096


class _RandomBuffer:
    """Bytes of one ``os.urandom`` read, handed out once each. Under a lock: the read
    releases the GIL, and another thread may take meanwhile. With the GIL, a refill's
    assignment and its slice run without a switch between them, so no bytes were ever
    handed out twice; the lock makes that hold by construction (a build without the GIL,
    or a future interpreter), for ~0.1 us a take."""

    __slots__ = ("_data", "_lock", "_offset")

    def __init__(self) -> None:
        self._data = b""
        self._offset = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bytes:
        with self._lock:
            start = self._offset
            end = start + size
            if end > len(self._data):
                self._data = os.urandom(max(_BUFFER_BYTES, size))
                start, end = 0, size
            self._offset = end
            return self._data[start:end]

    def drop(self) -> None:
        """In a forked child: forget the parent's bytes (and a lock a parent thread held)."""
        self._data = b""
        self._offset = 0
        self._lock = threading.Lock()


_buffer = _RandomBuffer()
os.register_at_fork(after_in_child=_buffer.drop)
_take = _buffer.take


def random_urlsafe(nbytes: int) -> str:
    """``secrets.token_urlsafe(nbytes)``'s form: unpadded base64url of ``nbytes`` bytes."""
    return base64.urlsafe_b64encode(_take(nbytes)).rstrip(b"=").decode("ascii")


def random_hex(nbytes: int) -> str:
    """``secrets.token_hex(nbytes)``'s form: ``2 * nbytes`` lowercase hex digits."""
    return _take(nbytes).hex()
