"""SSRF policy for webhook URLs: which addresses a delivery may connect to.

The URL's host is resolved once; every resolved address must be globally routable (IPv4-mapped,
NAT64 and 6to4 addresses are judged by the IPv4 address they embed). The delivery then connects to the
address that was checked (`transport.PinnedTransport`). Hosts listed in
`settings.webhook_allowed_hosts` skip the address check.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import Settings

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class UnsafeWebhookURL(ValueError):
    """A webhook URL that may not be called (bad scheme, unresolvable, or a non-public address)."""


@dataclass(frozen=True)
class ResolvedURL:
    """A checked URL: where to connect (the address that was checked) and what to ask for."""

    url: str
    host: str
    port: int
    address: str


def _allowed_hosts(settings: Settings) -> set[str]:
    return {h.strip().lower().strip("[]") for h in settings.webhook_allowed_hosts.split(",") if h.strip()}


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `address` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _refusal(address.ipv4_mapped)
        if address in NAT64_WELL_KNOWN:
            return _refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address in NAT64_LOCAL_USE:
            return "a local-use NAT64 address"
        if address.sixtofour is not None:
            return _refusal(address.sixtofour)
        if address.teredo is not None:
            return "a Teredo address"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "a shared (CGNAT) address"
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookURL(f"webhook host {host!r} does not resolve ({exc})") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeWebhookURL(f"webhook host {host!r} does not resolve")
    return addresses


def resolve_webhook_url(url: str, settings: Settings) -> ResolvedURL:
    """Check `url` (see check_webhook_url) and return it with the checked address to connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"invalid webhook URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookURL(f"webhook URL must be http or https, not {parts.scheme or 'no scheme'!r}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeWebhookURL(f"webhook URL {url!r} has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    if host not in _allowed_hosts(settings):
        for address in addresses:
            reason = _refusal(ipaddress.ip_address(address))
            if reason is not None:
                raise UnsafeWebhookURL(
                    f"webhook host {host!r} resolves to {address}, {reason}; only public addresses are allowed"
                    " (an operator can allow a host with DISCOVERY_WEBHOOK_ALLOWED_HOSTS)"
                )
    return ResolvedURL(url=url, host=host, port=port, address=addresses[0])


def check_webhook_url(url: str, settings: Settings) -> None:
    """Refuse (UnsafeWebhookURL) a URL that is not http(s), does not resolve, or resolves to any address
    that is not globally routable, unless its host is in settings.webhook_allowed_hosts."""
    resolve_webhook_url(url, settings)
