"""Identifiers from the buffered CSPRNG: secrets' forms, never repeated, and a forked child
never hands out its parent's bytes."""

from __future__ import annotations

import base64
import os
import re
import string

import pytest

from authority.domain import identifiers
from authority.domain.identifiers import random_hex, random_urlsafe


def test_the_forms_are_secrets_forms() -> None:
    for size in (1, 12, 16, 32):
        token = random_urlsafe(size)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == size
        digits = random_hex(size)
        assert len(digits) == 2 * size
        assert set(digits) <= set(string.hexdigits.lower())


def test_no_identifier_repeats_across_many_buffer_refills() -> None:
    seen = {random_urlsafe(16) for _ in range(20_000)}  # ~78 refills of 4 KiB
    assert len(seen) == 20_000


def test_a_request_larger_than_the_buffer_is_served_whole() -> None:
    assert len(random_hex(10_000)) == 20_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_hands_out_its_parents_bytes() -> None:
    random_hex(1)  # the buffer is filled: a child inherits unused bytes
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next identifiers, to the parent
        os.close(reader)
        os.write(writer, " ".join(random_hex(16) for _ in range(64)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    parent = {random_hex(16) for _ in range(64)}
    assert len(child) == 64
    assert not child & parent


def test_identifiers_read_the_kernel_csprng_once_per_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = os.urandom

    def counted(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(identifiers.os, "urandom", counted)
    identifiers._buffer.drop()
    for _ in range(256):  # 4 KiB of 16-byte identifiers
        random_urlsafe(16)
    assert reads == [4096]
