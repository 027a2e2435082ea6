"""Where the ``web`` server may connect: the host allow-list and the address rule, as plain data.

Dependency-free, so that the hub's grants (:mod:`dispatch.hub.policy.grants`) check the same rules the
server enforces. Two grants shape it:

- ``web``: ``true`` (any public host) or a list of hosts; an entry covers the host itself and
  its subdomains (``python.org`` covers ``docs.python.org``).
- ``web_private``: ``false`` (default: only globally routable addresses), ``true`` (any address,
  loopback and private networks included) or a list of addresses and networks
  (``127.0.0.1``, ``10.0.0.0/8``, ``fd00::/8``) that may be reached although they are not public.

Every address a host name resolves to is checked, at connect time (:mod:`.fetch`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Network",
    "WebPolicy",
    "address_refusal",
    "host_allowed",
    "host_covers",
    "network_covers",
    "normalize_host",
    "normalize_network",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


def normalize_host(entry: str) -> str:
    """A host of the ``web`` grant in canonical form (lower case, no trailing dot, IPs compressed).

    Raises ValueError naming the entry when it is a URL, has a port or path, or is no host name.
    """
    raw = entry.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    if not _HOST.match(raw):
        raise ValueError(f"web host {entry!r} is not a host name; give a bare host such as 'docs.python.org'")
    return raw


def host_covers(entry: str, host: str) -> bool:
    """Whether the grant entry ``entry`` covers ``host`` (itself or a subdomain; both normalized)."""
    return host == entry or host.endswith("." + entry)


def host_allowed(host: str, hosts: Iterable[str] | None) -> bool:
    """Whether ``host`` may be fetched under the allow-list ``hosts`` (None: any host)."""
    return hosts is None or any(host_covers(entry, host) for entry in hosts)


def normalize_network(entry: str) -> str:
    """An entry of the ``web_private`` grant as a network (``127.0.0.1`` becomes ``127.0.0.1/32``)."""
    try:
        return str(ipaddress.ip_network(entry.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"web_private entry {entry!r} is not an address or network; give one such as '127.0.0.1' or '10.0.0.0/8'"
        ) from None


def network_covers(container: str, network: str) -> bool:
    """Whether the network ``container`` includes all of ``network`` (both normalized)."""
    outer, inner = ipaddress.ip_network(container), ipaddress.ip_network(network)
    if isinstance(outer, ipaddress.IPv4Network) and isinstance(inner, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(outer, ipaddress.IPv6Network) and isinstance(inner, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
    ):
        if test:
            return kind
    return "non-public"


def address_refusal(address: str, private: bool | tuple[str, ...]) -> str | None:
    """Why ``address`` may not be reached under the ``web_private`` grant ``private``, or None.

    Only globally routable unicast addresses are free; an IPv4-mapped IPv6 address is judged as
    the IPv4 address it carries.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (ip.is_global and not ip.is_multicast) or private is True:
        return None
    if private and any(ip in ipaddress.ip_network(net) for net in private):
        return None
    return f"{address} is a {_kind(ip)} address, which needs the web_private grant"


@dataclass(frozen=True)
class WebPolicy:
    """What one agent's ``web`` server may reach."""

    hosts: tuple[str, ...] | None = None
    """Allowed hosts (each with its subdomains); None: any host."""
    private: bool | tuple[str, ...] = False
    """Loopback, private and link-local addresses: all (True), none (False) or these networks."""

    @classmethod
    def from_grants(cls, web: bool | tuple[str, ...], private: bool | tuple[str, ...]) -> WebPolicy:
        """The policy of the grants ``web`` (true or hosts) and ``web_private``."""
        return cls(hosts=None if web is True else tuple(web or ()), private=private)

    def host_refusal(self, host: str) -> str | None:
        """Why ``host`` may not be fetched, or None."""
        if host_allowed(host, self.hosts):
            return None
        return f"host {host!r} is not among the hosts this agent may fetch from ({', '.join(self.hosts or ())})"
