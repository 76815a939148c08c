from __future__ import annotations

import ipaddress

import pytest

from enqueue_service.settings import EnqueueSettings
from transcription_core.urls import UnsafeUrl, check_resolved_host, check_url, parse_networks

REFUSED = [
    "file:///etc/passwd",
    "ftp://example.com/a.mp3",
    "gopher://example.com/",
    "https://user:pass@example.com/a.mp3",
    "http://127.0.0.1/a.mp3",
    "http://localhost:8000/a.mp3",
    "http://api.localhost/a.mp3",
    "http://10.0.0.5/a.mp3",
    "http://172.16.3.4/a.mp3",
    "http://192.168.1.1/a.mp3",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.64.0.1/a.mp3",
    "http://0.0.0.0/a.mp3",
    "http://[::1]/a.mp3",
    "http://[fd00:ec2::254]/a.mp3",
    "http://[::ffff:127.0.0.1]/a.mp3",
    "http://2130706433/a.mp3",
    "http://0x7f000001/a.mp3",
    "http://127.1/a.mp3",
    "http:///nohost",
    "not a url",
    "http://example.com:99999/",
    # Addresses that embed an IPv4 address, or reach IPv4 through a translator: only
    # global unicast is admitted (6to4 of 169.254.169.254, Teredo, NAT64, mapped forms).
    "http://[2002:a9fe:a9fe::1]/",
    "http://[2002:808:808::1]/",  # 6to4 of a global address: all of 2002::/16 is refused
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 well-known prefix
    "http://[64:ff9b:1::a9fe:a9fe]/",  # NAT64 local-use prefix
    "http://[::ffff:8.8.8.8]/",  # IPv4-mapped
    "http://[::ffff:0:a9fe:a9fe]/",  # IPv4-translated (SIIT)
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://[::8.8.8.8]/",
    "http://[fe80::1]/",
    "http://[ff02::1]/",
]

#: Hosts that can never be resolved or connected to: refused at enqueue rather than
#: failing every delivery attempt (a label over 63 characters makes getaddrinfo raise
#: UnicodeError; httpx refuses the others with InvalidURL).
NEVER_WORKS = [
    "http://" + "a" * 64 + ".example.com/",
    "http://" + "a." * 127 + "com/",  # 256 characters: over 253
    "http://a..example.com/",
    "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/",  # fullwidth letters
    "http://exa\tmple.com/",
    "http://exa\nmple.com/",
    "http://exa\x00mple.com/",
    "http://\u200b.com/",
    "http://xn--zz.com/",  # not a valid A-label
    "http://ex ample.com/",
    "http://exa%41mple.com/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", NEVER_WORKS)
@pytest.mark.parametrize("allow_private", [False, True])
def test_hosts_that_can_never_work_are_refused(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, allow_private=allow_private)


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.amazonaws.com/v/123.mp4?X-Amz-Signature=abc",
        "https://b\u00fccher.example/a.mp3",
        "https://xn--bcher-kva.example/a.mp3",
        "https://" + "a" * 63 + ".example.com/a.mp3",
        "https://example.com./a.mp3",
        "http://[2001:4860:4860::8888]/a.mp3",
        "http://93.184.216.34/a.mp3",
        "https://example.com:8443/a.mp3",
    ],
)
def test_public_urls_pass(url: str) -> None:
    assert check_url(url, allow_private=False) == url


def test_private_hosts_pass_when_allowed_but_schemes_and_credentials_never() -> None:
    assert check_url("http://127.0.0.1:8000/a", allow_private=True)
    with pytest.raises(UnsafeUrl):
        check_url("file:///etc/passwd", allow_private=True)
    with pytest.raises(UnsafeUrl):
        check_url("http://u:p@127.0.0.1/", allow_private=True)


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "a..example.com", "exa\x00mple"])
async def test_a_host_that_cannot_be_resolved_is_refused_not_raised(host: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_resolved_host(host, 80, allow_private=False)


async def test_resolved_loopback_name_is_refused() -> None:
    with pytest.raises(UnsafeUrl):
        await check_resolved_host("localhost", 80, allow_private=False)
    await check_resolved_host("localhost", 80, allow_private=True)


def test_allowed_private_networks_admit_only_themselves() -> None:
    networks = parse_networks("10.0.5.0/24, fd00:5::/64")
    check_url("http://10.0.5.7/a.mp3", allow_private=False, allowed_networks=networks)
    check_url("http://[fd00:5::9]/a.mp3", allow_private=False, allowed_networks=networks)
    for url in (
        "http://10.0.6.7/a.mp3",
        "http://169.254.169.254/",
        "http://[2002:a00:507::1]/",  # 10.0.5.7 inside 6to4: still refused
        "http://localhost/",
    ):
        with pytest.raises(UnsafeUrl):
            check_url(url, allow_private=False, allowed_networks=networks)


def test_allowed_private_networks_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks("10.0.5.0/24,not-a-network")
    settings = EnqueueSettings(allowed_private_networks="127.0.0.0/8")
    assert settings.private_networks_allowed == (ipaddress.ip_network("127.0.0.0/8"),)
    with pytest.raises(ValueError, match="CIDR"):
        EnqueueSettings(allowed_private_networks="10.0.0.0/33")
