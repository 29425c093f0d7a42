"""Which address a request comes from, trusting forwarding headers only from trusted proxies.

Security: ``X-Forwarded-For`` and ``Forwarded`` are written by the client unless a
proxy you run overwrites them, so they are read only when the socket peer is a
configured trusted proxy, and then walked from the right (the hops your proxies
appended), skipping trusted hops: the first untrusted address is the client.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable

from ..._memo import Memo, memoized

__all__ = ["UNKNOWN", "ProxyTrust"]

logger = logging.getLogger("redis_middleware")

UNKNOWN = "unknown"
_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)
_MAX_HOPS = 64

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@memoized(4096)  # peers repeat; parsing showed in the profile
def parse_address(text: str) -> IPAddress | None:
    """An address from a header or peer value: strips ports, brackets and zone ids."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ProxyTrust:
    """Trusted proxy networks and the IPv6 grouping; turns a request into a client key."""

    def __init__(self, trusted: Iterable[str], ipv6_prefix: int = 64) -> None:
        entries = list(trusted)
        self.trust_all = "*" in entries
        if self.trust_all:
            logger.warning(
                "trusted_proxies='*': every peer may set X-Forwarded-For; use this only "
                "behind a proxy that overwrites the header"
            )
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
        # No proxy is trusted (the default): forwarding headers are never read, so the
        # caller need not collect them.
        self.anyone = self.trust_all or bool(self.networks)
        self.ipv6_prefix = ipv6_prefix
        # (peer, X-Forwarded-For lines, Forwarded lines) -> bucket: parsing and printing
        # addresses was a measured part of every counted request; bounded, as clients
        # choose the header lines.
        self._buckets: Memo[tuple[str | None, tuple[str, ...], tuple[str, ...]], str] = (
            Memo(4096))

    def trusts(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        return self.trust_all or any(address in net for net in self.networks)

    def key(self, address: IPAddress | None) -> str:
        """The rate-limit bucket of an address: v4 as is, v6 grouped by its prefix."""
        if address is None:
            return UNKNOWN
        if isinstance(address, ipaddress.IPv6Address) and self.ipv6_prefix < 128:
            net = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
            return str(net)
        return str(address)

    def client(self, peer: str | None, xff: list[str], forwarded: list[str]) -> str:
        """The client's bucket for a request from ``peer`` with these header lines."""
        lines = (peer, tuple(xff), tuple(forwarded))
        found = self._buckets.get(lines)
        if found is None:
            found = self._buckets.put(lines, self._client(peer, xff, forwarded))
        return found

    def _client(self, peer: str | None, xff: list[str], forwarded: list[str]) -> str:
        address = parse_address(peer) if peer else None
        if not self.trusts(address) or not (xff or forwarded):
            return self.key(address)
        hops: list[str] = []
        if xff:
            for line in xff:
                hops += line.split(",")
        else:
            for line in forwarded:
                hops += [m.group(1) for m in _FOR.finditer(line)]
        for hop in reversed(hops[-_MAX_HOPS:]):
            candidate = parse_address(hop)
            if candidate is None:
                return UNKNOWN  # garbage in the chain: one shared bucket, never a new key
            if not self.trusts(candidate):
                return self.key(candidate)
        return self.key(parse_address(hops[0]) if hops else address)
