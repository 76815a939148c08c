"""The private-address guard for media and webhook URLs.

A client hands us URLs that our servers then fetch or post to, so a URL must not reach
into our own network: loopback, private, link-local (the cloud metadata service at
169.254.169.254 among them), carrier-grade NAT, multicast and reserved addresses are
refused, unless the operator sets ``ALLOW_PRIVATE_URLS=true`` (local runs and tests), or
names the private networks URLs may reach in ``ALLOWED_PRIVATE_NETWORKS`` (an in-cluster
bucket; the rest stays refused).
Only global unicast addresses pass: for IPv6 that is 2000::/3 less the two prefixes in it
that carry an IPv4 address (Teredo 2001::/32 and 6to4 2002::/16, all of it, whatever the
IPv4 inside), so NAT64, IPv4-mapped, -translated and -compatible forms are refused too.

A host that no resolver takes (a label over 63 characters or empty, a name over 253,
characters outside letters, digits, ``-`` and ``_`` once IDNA-encoded, anything httpx
refuses) is refused whatever ``ALLOW_PRIVATE_URLS`` says: such a URL can never work.

``check_url`` runs where a URL comes in (no DNS: the enqueue API stays fast and does
not depend on what it can resolve); ``check_resolved_host`` runs before every
connection the workers make, on every address the host name resolves to, including
each redirect hop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from transcription_core.errors import InvalidRequest

#: Host names that always mean "this machine" or a cloud metadata service.
_FORBIDDEN_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
#: One label of an IDNA-encoded host name (underscores occur in real DNS names).
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
#: IPv6 global unicast, and the prefixes in it whose addresses embed an IPv4 address.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_EMBEDS_IPV4 = (ipaddress.IPv6Network("2001::/32"), ipaddress.IPv6Network("2002::/16"))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (``10.0.5.0/24,fd00::/8``); ``ValueError`` names a bad one."""
    networks = []
    for part in value.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not a network in CIDR notation: {part.strip()!r}") from exc
    return tuple(networks)


def _allowed(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[Network]
) -> bool:
    return any(ip in network for network in networks if ip.version == network.version)


class UnsafeUrl(InvalidRequest):
    """A URL we refuse to fetch from or post to; the message says why, for the client
    (422 if it reaches one)."""


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
    """Anything but a global unicast address (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address) and (
        ip not in _GLOBAL_UNICAST or any(ip in prefix for prefix in _EMBEDS_IPV4)
    ):
        return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved


def ascii_host(host: str) -> str:
    """``host`` as a connection names it (IDNA-encoded, lower case, no brackets), or
    :class:`UnsafeUrl` if no resolver would take it."""
    try:
        parsed = httpx.URL(scheme="http", host=host)
        encoded = parsed.raw_host.decode("ascii")
        _ = parsed.host  # decoding checks each "xn--" label
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise UnsafeUrl(f"the host is not valid: {exc}") from exc
    if parse_ip(encoded) is not None:
        return encoded
    name = encoded.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise UnsafeUrl(
            f"the host {host!r} is not a valid host name: each label 1 to 63 letters, "
            "digits, hyphens or underscores, 253 characters in all"
        )
    return encoded


def _check_host(host: str, allowed_networks: Sequence[Network]) -> None:
    """Raise :class:`UnsafeUrl` for a private address or internal name (ASCII ``host``)."""
    host = host.removesuffix(".")
    ip = parse_ip(host)
    if ip is not None:
        if is_forbidden_address(ip) and not _allowed(ip, allowed_networks):
            raise UnsafeUrl(
                f"the host {host} is a private, loopback, link-local or otherwise "
                "non-global address (only global unicast is accepted)"
            )
    elif host in _FORBIDDEN_NAMES or host.endswith(".localhost") or host.endswith(".internal"):
        raise UnsafeUrl(f"the host {host} is an internal name")


def check_url(url: str, *, allow_private: bool, allowed_networks: Sequence[Network] = ()) -> str:
    """Return ``url`` if it is an http(s) URL we may fetch; raise :class:`UnsafeUrl`.

    ``allowed_networks`` are private networks the URL may reach all the same.

    The host is checked as :func:`urllib.parse.urlsplit` reads it and as httpx (which
    connects) reads it, so no difference between the two parsers slips through.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        connect_host = httpx.URL(url).raw_host.decode("ascii")
    except (ValueError, httpx.InvalidURL) as exc:  # UnicodeError is a ValueError
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
    hosts = {ascii_host(host), ascii_host(connect_host)}
    if not allow_private:
        for name in hosts:
            _check_host(name, allowed_networks)
    return url


async def check_resolved_host(
    host: str, port: int, *, allow_private: bool, allowed_networks: Sequence[Network] = ()
) -> None:
    """Raise :class:`UnsafeUrl` if ``host`` resolves to any forbidden address.

    A name that does not resolve raises ``socket.gaierror`` (an ``OSError``): that is a
    connection failure, which is retried, not a refusal. A host no resolver takes raises
    :class:`UnsafeUrl` (never ``UnicodeError``); the name resolved is the IDNA encoding
    httpx connects to.
    """
    name = ascii_host(host)
    if allow_private:
        return
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if is_forbidden_address(ip) and not _allowed(ip, allowed_networks):
            raise UnsafeUrl(f"the host {host} resolves to a private address ({ip})")
