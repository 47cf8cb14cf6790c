"""Where webhooks may point: public addresses only, unless an operator allows more (SSRF guard).

A webhook URL is checked twice. At registration, the host is resolved (IP literals in every
encoding the system resolver accepts, ``2130706433`` or ``0x7f.0.0.1`` included) and refused with a
422 naming ``url`` when any address is loopback, link-local, private, shared, reserved, unspecified or
multicast, or when the name is a cloud metadata name. At send time the name is resolved again, every
address is vetted the same way, and the request is made to the vetted address itself (the ``Host``
header and the TLS server name keep the URL's name), so a name that re-resolves to an internal
address (DNS rebinding) is refused instead of followed.

``SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS`` (comma-separated) lets deployments and tests deliver inside:
each entry is a host name (matched exactly, case-insensitively: the name may then resolve anywhere)
or an address or CIDR block (``127.0.0.0/8``, ``10.0.0.0/8``, ``::1``) whose addresses are allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["BLOCKED_NAMES", "Destination", "DestinationPolicy", "RefusedDestination"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that reach instance metadata services without looking like an internal address.
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                           "instance-data.ec2.internal", "metadata.azure.internal"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedDestination(ValueError):
    """The URL's host is (or resolves to) an address webhooks may not reach; the message says why."""


@dataclass(frozen=True)
class Destination:
    """A vetted address for one request: connect to ``address``, say ``host`` in Host/SNI."""

    host: str
    address: str
    port: int


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv4-mapped, 6to4-free NAT64 or IPv4-compatible IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _why_internal(ip: IPAddress) -> str | None:
    ip = _unwrap(ip)
    for attr, what in (("is_loopback", "loopback"), ("is_link_local", "link-local (cloud metadata)"),
                       ("is_unspecified", "unspecified"), ("is_multicast", "multicast"),
                       ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, attr):
            return what
    if not ip.is_global:
        return "not publicly routable"
    return None


def _parse_allow(entries: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    names: set[str] = set()
    nets: list[IPNetwork] = []
    for raw in entries.split(","):
        item = raw.strip().strip("[]").lower()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.rstrip("."))
    return frozenset(names), tuple(nets)


@dataclass(frozen=True)
class DestinationPolicy:
    """Which webhook destinations are allowed; ``allow`` is the comma-separated allow-list."""

    allow: str = ""
    _names: frozenset[str] = field(init=False, repr=False)
    _nets: tuple[IPNetwork, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names, nets = _parse_allow(self.allow)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_nets", nets)

    def _address_allowed(self, ip: IPAddress) -> str | None:
        """None when ``ip`` may be reached, else why not."""
        candidates = {ip, _unwrap(ip)}
        if any(c in net for c in candidates for net in self._nets if c.version == net.version):
            return None
        return _why_internal(ip)

    def vet(self, url: str) -> list[Destination]:
        """Resolve ``url``'s host and return its allowed addresses (first to try first).

        Raises :class:`RefusedDestination` when the URL has no host, the name is a metadata name,
        it does not resolve, or any address it resolves to is internal and not allowed."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise RefusedDestination("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise RefusedDestination(f"bad port: {exc}") from exc
        name_allowed = host in self._names
        if host in BLOCKED_NAMES and not name_allowed:
            raise RefusedDestination(f"{host} is a local or cloud metadata name")
        try:  # an IP literal is judged as written, even where it does not resolve (a zone id, say)
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None and not name_allowed:
            why = self._address_allowed(literal)
            if why is not None:
                raise RefusedDestination(f"{host} is a {why} address; webhooks may reach public addresses only "
                                         "unless SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS allows it")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, ValueError) as exc:  # ValueError: IDNA errors, embedded NUL bytes
            raise RefusedDestination(f"{host} does not resolve ({exc})") from exc
        out: list[Destination] = []
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            ip = ipaddress.ip_address(address)
            if not name_allowed:
                why = self._address_allowed(ip)
                if why is not None:
                    raise RefusedDestination(
                        f"{host} resolves to {address}, a {why} address; webhooks may reach public addresses "
                        "only unless SAPO_MONITOR_WEBHOOK_ALLOW_HOSTS allows it")
            if all(d.address != address for d in out):
                out.append(Destination(host=host, address=address, port=port))
        if not out:
            raise RefusedDestination(f"{host} resolves to no address")
        return out

    def check_registration(self, url: str) -> None:
        """Refuse a URL at registration; a name that does not resolve yet is accepted (checked again
        at every send)."""
        try:
            self.vet(url)
        except RefusedDestination as exc:
            if "does not resolve" not in str(exc):
                raise
