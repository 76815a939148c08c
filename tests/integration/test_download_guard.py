"""The private-address guard on every hop of a download, with ALLOW_PRIVATE_URLS off.

The loopback test server cannot stand in for a public media host (it is private itself), so
here the first hop is a public address literal answered by ``httpx.MockTransport``: no DNS,
no connection, nothing patched. The guard runs for real before each request the transport
sees; a refused hop never reaches it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from testkit.media_server import MediaServer
from transcriber_service.download import check_hop, download_to_file
from transcriber_service.errors import DownloadError
from transcription_core.status import FailureReason

PUBLIC = "http://93.184.215.14"  # a global unicast address literal: passes the guard, no DNS


class FakeMediaHost:
    """Answers ``/to?url=U`` with a redirect to U and anything else with a small body."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        target = request.url.params.get("url")
        if target is not None:
            return httpx.Response(302, headers={"location": target})
        return httpx.Response(200, content=b"media", headers={"content-type": "video/mp4"})


@pytest.fixture
def media_host() -> FakeMediaHost:
    return FakeMediaHost()


@pytest.fixture
async def client(media_host: FakeMediaHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(media_host)) as client:
        yield client


async def download(client: httpx.AsyncClient, url: str, dest: Path, **kwargs: object):
    options: dict[str, object] = {"max_bytes": 1000, "allow_private": False}
    options.update(kwargs)
    return await download_to_file(client, url, dest, **options)  # type: ignore[arg-type]


async def test_public_url_is_fetched(
    client: httpx.AsyncClient, media_host: FakeMediaHost, tmp_path: Path
) -> None:
    result = await download(client, f"{PUBLIC}/v/1.mp4?X-Amz-Signature=s3cr3t", tmp_path / "m")

    assert result.num_bytes == 5
    assert media_host.seen == [f"{PUBLIC}/v/1.mp4?X-Amz-Signature=s3cr3t"]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",  # the cloud metadata service
        "http://127.0.0.1:8002/internal",
        "http://localhost/",
        "http://[::1]/",
        "http://10.0.0.7/bucket/x.mp4",
        "http://2130706433/",  # 127.0.0.1 spelt as a number
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[2002:a9fe:a9fe::1]/",  # 6to4: embeds 169.254.169.254
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    ],
)
async def test_redirect_to_a_private_address_is_forbidden(
    client: httpx.AsyncClient, media_host: FakeMediaHost, tmp_path: Path, target: str
) -> None:
    with pytest.raises(DownloadError) as caught:
        await download(client, f"{PUBLIC}/to?url={target}", tmp_path / "m")

    failure = caught.value
    assert failure.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert not failure.retried
    assert "redirected to" in failure.detail
    assert "private" in failure.detail or "internal" in failure.detail
    assert len(media_host.seen) == 1, "the private hop was never requested"


async def test_redirect_to_another_scheme_is_forbidden(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError) as caught:
        await download(client, f"{PUBLIC}/to?url=file:///etc/passwd", tmp_path / "m")
    assert caught.value.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert "http and https" in caught.value.detail


async def test_a_private_hop_after_public_ones_is_still_caught(
    client: httpx.AsyncClient, media_host: FakeMediaHost, tmp_path: Path
) -> None:
    inner = "http://169.254.169.254/"
    middle = f"http://93.184.215.15/to?url={inner}"
    with pytest.raises(DownloadError) as caught:
        await download(client, f"{PUBLIC}/to?url={middle}", tmp_path / "m")

    assert caught.value.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert "169.254.169.254" in caught.value.detail
    assert len(media_host.seen) == 2


async def test_detail_never_carries_the_signature(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    url = f"{PUBLIC}/to?url=http://10.1.2.3/x.mp4%3FX-Amz-Signature%3Ds3cr3t"
    with pytest.raises(DownloadError) as caught:
        await download(client, url, tmp_path / "m")
    assert "s3cr3t" not in caught.value.detail
    assert "http://10.1.2.3" in caught.value.detail


async def test_first_hop_is_checked_too() -> None:
    with pytest.raises(DownloadError) as caught:
        await check_hop("http://169.254.169.254/", allow_private=False)
    assert caught.value.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert caught.value.detail.startswith("the media URL was refused")


async def test_check_hop_allows_private_when_the_operator_does() -> None:
    await check_hop("http://127.0.0.1:9/", allow_private=True)


async def test_a_host_that_does_not_resolve_is_a_retried_failure() -> None:
    # .invalid never resolves (RFC 6761): a DNS failure, not a refusal.
    with pytest.raises(DownloadError) as caught:
        await check_hop("https://media.example.invalid/v.mp4", allow_private=False)
    assert caught.value.reason is FailureReason.DOWNLOAD_FAILED
    assert caught.value.retried
    assert "could not resolve" in caught.value.detail


# --- a real loopback media host, with only loopback allowed -----------------------------

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def loopback_host() -> AsyncIterator[str]:
    async with MediaServer() as host:
        yield host.url


@pytest.mark.parametrize(
    "target",
    [
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/",  # 6to4 around 169.254.169.254
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 around the same
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private
        "http://10.0.0.1/",  # private, not in the allowed networks
    ],
)
async def test_a_real_host_redirecting_past_the_allowed_networks_is_refused(
    loopback_host: str, target: str, tmp_path: Path
) -> None:
    """ALLOW_PRIVATE_URLS off, ALLOWED_PRIVATE_NETWORKS 127.0.0.0/8: the loopback host is
    reached, the address it redirects to is not."""
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(DownloadError) as caught:
            await download(
                client,
                f"{loopback_host}/to?url={quote(target, safe='')}",
                tmp_path / "m",
                allowed_networks=LOOPBACK_ONLY,
            )
    assert caught.value.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert "redirected to" in caught.value.detail and "refused" in caught.value.detail


async def test_an_allowed_private_network_is_reached(loopback_host: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        result = await download(
            client, f"{loopback_host}/media/500", tmp_path / "m", allowed_networks=LOOPBACK_ONLY
        )
        with pytest.raises(DownloadError) as caught:
            await download(client, f"{loopback_host}/media/500", tmp_path / "m")
    assert result.num_bytes == 500
    assert caught.value.reason is FailureReason.DOWNLOAD_FORBIDDEN
