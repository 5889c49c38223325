"""One parser for the caller's address, and the key per-source limits count under."""

from __future__ import annotations

import pytest

from authority.domain.sources import peer_address, source_key


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.5:4711", "10.0.0.5"),
        ("ipv6:[::1]:4711", "::1"),
        ("ipv6:%5B::1%5D:4711", "::1"),
        ("ipv6:[2001:DB8:0:0::7]:1", "2001:db8::7"),
        ("ipv6:[::ffff:192.0.2.7]:4711", "192.0.2.7"),
        ("ipv6:%5B::ffff:192.0.2.7%5D:4711", "192.0.2.7"),
        ("ipv6:[fe80::1%25eth0]:4711", "fe80::1%eth0"),
        ("unix:/run/authority.sock", "unix:/run/authority.sock"),
        ("ipv4:not-an-address:1", "ipv4:not-an-address:1"),
        ("", ""),
    ],
)
def test_peer_strings_become_plain_canonical_addresses(peer: str, address: str) -> None:
    assert peer_address(peer) == address


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::9]", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unix:/run/authority.sock", "unix:/run/authority.sock"),
    ],
)
def test_source_keys_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4(address: str, key: str) -> None:
    assert source_key(address) == key


def test_every_address_of_one_64_shares_a_key_and_the_next_64_does_not() -> None:
    keys = {source_key(f"2001:db8:aa:bb:{i:x}::{i:x}") for i in range(1, 200)}
    assert keys == {"2001:db8:aa:bb::/64"}
    assert source_key("2001:db8:aa:bc::1") != source_key("2001:db8:aa:bb::1")
