"""Where a webhook may be delivered: public addresses only, unless the operator allows more.

A webhook URL is chosen by whoever holds the admin credential, and the authority then
sends requests to it from inside the network: without a rule, it is a way to reach
cloud metadata (169.254.169.254), loopback services and the private network (SSRF).
So every address a delivery would connect to must be globally routable, as the
standard library's ``ipaddress`` classifies it, or lie in a network (or belong to a
host name) that the operator listed in ``AUTHORITY_WEBHOOK_ALLOWED_NETWORKS``.

The rule is applied to the addresses a connection really uses (see
``authority.services.webhook_resolver``), so a name that resolves to a public
address at creation and to 127.0.0.1 at delivery (DNS rebinding) is still refused.
Pure: no resolution here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from authority.domain.errors import InvalidArgument

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64 (RFC 6052) embeds an IPv4 address in an IPv6 one; ipaddress has no property for
# it, unlike IPv4-mapped, 6to4 and Teredo.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Instance metadata services at addresses the ipaddress classes call global (Azure's
# WireServer). The link-local and ULA ones (169.254.169.254, fd00:ec2::254) need no entry.
_METADATA = frozenset({ipaddress.IPv4Address("168.63.129.16")})

REFUSED_MESSAGE = (
    "webhook destinations must be public addresses: {host} is {reason}"
    " (an operator can allow it with AUTHORITY_WEBHOOK_ALLOWED_NETWORKS)"
)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Networks and host names the operator allows besides public addresses."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    def allows_host(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hosts

    def allows_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


PUBLIC_ONLY = AllowList()


def parse_allow_list(text: str) -> AllowList:
    """``"10.0.0.0/8, 127.0.0.1, hooks.internal"``: CIDRs, addresses and host names."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        if "/" in item or not _hostname_like(item):
            raise ValueError(f"{item!r} is neither a CIDR, an address nor a host name")
        hosts.add(item.rstrip(".").lower())
    return AllowList(tuple(networks), frozenset(hosts))


def _hostname_like(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) for label in labels
    )


def literal_address(host: str) -> Address | None:
    """The address ``host`` denotes by itself, in any spelling a resolver accepts: dotted,
    IPv6, and the inet_aton forms (decimal ``2130706433``, octal ``0177.0.0.1``, hex
    ``0x7f.1``, short ``127.1``). None for a host name."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except (OSError, ValueError):
        return None


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address) -> str | None:
    """Why ``address`` is no public destination (None when it is one)."""
    inner = _embedded(address)
    if inner is not None:
        reason = refusal(inner)
        if reason:
            return f"{reason} (embedded in an IPv6 address)"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return None  # it is that IPv4 address; its own range says nothing more
    for refused, reason in (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (address in _METADATA, "a cloud metadata service"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (not address.is_global, "not globally routable"),  # CGNAT 100.64/10 and the like
    ):
        if refused:
            return reason
    return None


def check_address(address: Address, allow: AllowList, *, host: str = "") -> None:
    """InvalidArgument unless ``address`` is public or allowed."""
    if allow.allows_host(host) or allow.allows_address(address):
        return
    reason = refusal(address)
    if reason is not None:
        raise InvalidArgument(REFUSED_MESSAGE.format(host=host or address, reason=reason))


def check_name(host: str, allow: AllowList) -> None:
    """RFC 6761: ``localhost`` and ``*.localhost`` are loopback whatever a resolver says
    (some refuse ``localhost.`` today and answer it tomorrow)."""
    name = host.rstrip(".").lower()
    if (name == "localhost" or name.endswith(".localhost")) and not allow.allows_host(host):
        raise InvalidArgument(REFUSED_MESSAGE.format(host=host, reason="loopback"))


def check_addresses(host: str, addresses: Iterable[Address], allow: AllowList) -> None:
    """Every address ``host`` resolved to must pass: a resolver may hand out any of them."""
    for address in addresses:
        check_address(address, allow, host=host)


def url_host(url: str) -> str:
    """The host of a validated webhook URL, without brackets (``[::1]`` -> ``::1``)."""
    return urlsplit(url).hostname or ""
