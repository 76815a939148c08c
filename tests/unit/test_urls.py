from __future__ import annotations

import pytest

from transcription_core.urls import UnsafeUrl, check_resolved_host, check_url

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
]


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket.s3.amazonaws.com/v/123.mp4?X-Amz-Signature=abc",
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


async def test_resolved_loopback_name_is_refused() -> None:
    with pytest.raises(UnsafeUrl):
        await check_resolved_host("localhost", 80, allow_private=False)
    await check_resolved_host("localhost", 80, allow_private=True)
