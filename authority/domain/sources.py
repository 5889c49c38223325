"""Where a request comes from: the peer's address, and the key per-source limits use.

One parser for every place that needs the caller's address (limits, audit events), so
they cannot disagree about what "the same source" is.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

# One IPv6 subscriber usually gets a whole /64 (RFC 6177): keyed by address, an attacker
# would have 2**64 fresh sources to spend.
IPV6_SOURCE_PREFIX = 64


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener's view of an IPv4 client
    return address


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string without its port, in canonical form.

    ``ipv4:10.0.0.5:4711`` -> ``10.0.0.5``; ``ipv6:[::1]:4711`` (or its percent-encoded
    form ``ipv6:%5B::1%5D:4711``) -> ``::1``; an IPv4-mapped IPv6 peer -> its IPv4
    address. Anything else (a Unix socket peer) is returned as given.
    """
    scheme, sep, rest = peer.partition(":")
    if not sep or scheme not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(rest).rpartition(":")[0].strip("[]")
    address = _ip(host)
    return str(address) if address is not None else peer


def source_key(address: str) -> str:
    """The key per-source limits count under: an IPv4 address as it is, an IPv4-mapped
    IPv6 address as its IPv4 address, any other IPv6 address by its /64 network (so the
    addresses of one subscriber share one limit), and anything else as given."""
    address_ = _ip(address.strip("[]"))
    if address_ is None:
        return address
    if isinstance(address_, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address_, IPV6_SOURCE_PREFIX), strict=False)
        return str(network)
    return str(address_)


def host_address(host: str) -> str:
    """An HTTP peer's address (``aiohttp``'s ``request.remote``) in the canonical form
    ``peer_address`` gives a gRPC peer, so both APIs share limits and audit addresses."""
    address = _ip(host.strip("[]"))
    return str(address) if address is not None else host
