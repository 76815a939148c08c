"""The private-address guard for media and webhook URLs.

A client hands us URLs that our servers then fetch or post to, so a URL must not reach
into our own network: loopback, private, link-local (the cloud metadata service at
169.254.169.254 among them), carrier-grade NAT, multicast and reserved addresses are
refused, unless the operator sets ``ALLOW_PRIVATE_URLS=true`` (local runs and tests).

``check_url`` runs where a URL comes in (no DNS: the enqueue API stays fast and does
not depend on what it can resolve); ``check_resolved_host`` runs before every
connection the workers make, on every address the host name resolves to, including
each redirect hop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

#: Host names that always mean "this machine" or a cloud metadata service.
_FORBIDDEN_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")


class UnsafeUrl(ValueError):
    """A URL we refuse to fetch from or post to; the message says why, for the client."""


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host part denotes, in any spelling a resolver accepts, or None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton takes the short and numeric forms too: 127.1, 0x7f000001, 2130706433.
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved


def check_url(url: str, *, allow_private: bool) -> str:
    """Return ``url`` if it is an http(s) URL we may fetch; raise :class:`UnsafeUrl`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are accepted")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("URLs with credentials in them are not accepted")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrl("the URL has no host")
    if port == 0:
        raise UnsafeUrl("port 0 is not a valid port")
    if allow_private:
        return url
    ip = parse_ip(host)
    if ip is not None:
        if is_forbidden_address(ip):
            raise UnsafeUrl(f"the host {host} is a private, loopback or link-local address")
    elif host in _FORBIDDEN_NAMES or host.endswith(".localhost") or host.endswith(".internal"):
        raise UnsafeUrl(f"the host {host} is an internal name")
    return url


async def check_resolved_host(host: str, port: int, *, allow_private: bool) -> None:
    """Raise :class:`UnsafeUrl` if ``host`` resolves to any forbidden address.

    A name that does not resolve raises ``socket.gaierror`` (an ``OSError``): that is a
    connection failure, which is retried, not a refusal.
    """
    if allow_private:
        return
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if is_forbidden_address(ip):
            raise UnsafeUrl(f"the host {host} resolves to a private address ({ip})")
