"""Resolution for webhook deliveries that only ever yields allowed addresses.

aiohttp connects to exactly the addresses its resolver returns. This resolver
resolves once, checks every address against ``authority.domain.webhook_targets``,
and refuses the whole host if any address is internal: the check and the connection
use the same answer, so DNS rebinding (public at creation, 127.0.0.1 at delivery)
has no window. IP literals never reach a resolver; ``check_literal`` covers them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from authority.domain.errors import InvalidArgument
from authority.domain.webhook_targets import (
    AllowList,
    check_address,
    check_addresses,
    check_name,
    literal_address,
    url_host,
)

CREATION_LOOKUP_TIMEOUT = 3.0


class DestinationRefused(OSError):
    """A delivery's host resolved to an address that is not allowed."""


class GuardedResolver(AbstractResolver):
    def __init__(self, allow: AllowList, inner: AbstractResolver | None = None) -> None:
        self._allow = allow
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            check_addresses(host, (ipaddress.ip_address(r["host"]) for r in results), self._allow)
        except (InvalidArgument, ValueError) as refused:
            raise DestinationRefused(str(refused)) from None
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_literal(url: str, allow: AllowList) -> bool:
    """True when the URL's host is an address (checked: InvalidArgument if refused)."""
    host = url_host(url)
    address = literal_address(host)
    if address is None:
        return False
    check_address(address, allow, host=host)
    return True


async def check_destination(url: str, allow: AllowList) -> None:
    """At creation: refuse a URL whose host is, or now resolves to, an internal address.

    A name that does not resolve (yet) is accepted: every delivery checks again."""
    if check_literal(url, allow):
        return
    host = url_host(url)
    if allow.allows_host(host):
        return
    check_name(host, allow)
    resolver = GuardedResolver(allow)
    try:
        async with asyncio.timeout(CREATION_LOOKUP_TIMEOUT):
            await resolver.resolve(host, 0, socket.AF_UNSPEC)
    except DestinationRefused as refused:
        raise InvalidArgument(str(refused)) from None
    except (OSError, TimeoutError):
        pass  # unknown today; refused at delivery if it ever resolves inside
    finally:
        await resolver.close()
