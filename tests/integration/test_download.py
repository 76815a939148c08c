"""download_to_file against a real HTTP server on loopback: every outcome in the table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from testkit.media_server import MediaServer, body_bytes
from testkit.ports import free_port
from transcriber_service.download import DownloadResult, download_to_file
from transcriber_service.errors import DownloadError
from transcription_core.status import FailureReason

MAX_BYTES = 1_000_000


@pytest.fixture
async def host() -> AsyncIterator[MediaServer]:
    async with MediaServer() as server:
        yield server


@pytest.fixture
def base_url(host: MediaServer) -> str:
    return host.url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The worker's client: explicit timeouts; a short read timeout so the stall test is quick.
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.5)) as client:
        yield client


async def download(
    client: httpx.AsyncClient, url: str, dest: Path, **kwargs: object
) -> DownloadResult:
    options: dict[str, object] = {"max_bytes": MAX_BYTES, "allow_private": True}
    options.update(kwargs)
    return await download_to_file(client, url, dest, **options)  # type: ignore[arg-type]


async def fails(client: httpx.AsyncClient, url: str, dest: Path, **kwargs: object) -> DownloadError:
    with pytest.raises(DownloadError) as caught:
        await download(client, url, dest, **kwargs)
    assert no_file_at(dest), "a failed download leaves no partial file"
    return caught.value


def no_file_at(path: Path) -> bool:
    return not path.exists()


async def test_streams_the_body_to_the_file(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "media.bin"

    result = await download(client, f"{base_url}/media/300000", dest)

    assert result.path == dest
    assert result.num_bytes == 300_000
    assert dest.read_bytes() == body_bytes(300_000)
    assert result.final_url == f"{base_url}/media/300000"
    assert result.content_type == "audio/mpeg"
    assert result.redirects == 0


async def test_chunked_body_without_a_length(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    result = await download(client, f"{base_url}/chunked/250000", tmp_path / "m")

    assert result.num_bytes == 250_000
    assert (tmp_path / "m").read_bytes() == body_bytes(250_000)


async def test_exactly_max_bytes_is_accepted(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    result = await download(client, f"{base_url}/chunked/{MAX_BYTES}", tmp_path / "m")
    assert result.num_bytes == MAX_BYTES


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, FailureReason.DOWNLOAD_FORBIDDEN),
        (403, FailureReason.DOWNLOAD_FORBIDDEN),
        (404, FailureReason.DOWNLOAD_NOT_FOUND),
        (410, FailureReason.DOWNLOAD_NOT_FOUND),
        (500, FailureReason.DOWNLOAD_FAILED),
        (503, FailureReason.DOWNLOAD_FAILED),
        (429, FailureReason.DOWNLOAD_FAILED),
    ],
)
async def test_http_errors(
    client: httpx.AsyncClient,
    base_url: str,
    tmp_path: Path,
    status: int,
    reason: FailureReason,
) -> None:
    failure = await fails(client, f"{base_url}/status/{status}", tmp_path / "m")

    assert failure.reason is reason
    assert failure.http_status == status
    assert f"HTTP {status}" in failure.detail
    assert failure.retried is (reason is FailureReason.DOWNLOAD_FAILED)


async def test_a_stalled_server_fails_on_the_read_timeout(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/stall", tmp_path / "m")

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert "sent no data for 0.5 s" in failure.detail
    assert failure.retried


async def test_the_overall_deadline(base_url: str, tmp_path: Path) -> None:
    # A client with a generous read timeout: the download's own deadline ends it.
    async with httpx.AsyncClient(timeout=30.0) as patient:
        failure = await fails(patient, f"{base_url}/stall", tmp_path / "m", total_timeout_s=0.3)

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert "longer than the limit of 0.3 s" in failure.detail


async def test_a_body_cut_short_fails(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/short/200000", tmp_path / "m")

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert "broke off" in failure.detail


async def test_content_length_over_the_limit_is_refused_before_the_body(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    # /huge declares 10 GB and sends nothing: only the up-front check can end this quickly
    # with MEDIA_TOO_LARGE (reading would end in a read timeout instead).
    failure = await fails(client, f"{base_url}/huge", tmp_path / "m")

    assert failure.reason is FailureReason.MEDIA_TOO_LARGE
    assert "10240.0 MiB" in failure.detail
    assert not failure.retried


async def test_content_length_just_over_the_limit(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/media/{MAX_BYTES + 1}", tmp_path / "m")
    assert failure.reason is FailureReason.MEDIA_TOO_LARGE


async def test_chunked_body_over_the_limit_is_stopped_while_streaming(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/chunked/{3 * MAX_BYTES}", tmp_path / "m")

    assert failure.reason is FailureReason.MEDIA_TOO_LARGE
    assert "over the limit" in failure.detail


async def test_a_redirect_chain_is_followed(
    client: httpx.AsyncClient, host: MediaServer, base_url: str, tmp_path: Path
) -> None:
    result = await download(client, f"{base_url}/hop/3", tmp_path / "m")

    assert result.num_bytes == 1000
    assert result.redirects == 4
    assert result.final_url == f"{base_url}/media/1000"
    assert host.requests == ["/hop/3", "/hop/2", "/hop/1", "/hop/0", "/media/1000"]


async def test_redirects_are_followed_even_by_a_client_that_would_not(
    base_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(follow_redirects=False, timeout=5.0) as strict:
        result = await download(strict, f"{base_url}/hop/1", tmp_path / "m")
    assert result.num_bytes == 1000


async def test_too_many_redirects(
    client: httpx.AsyncClient, host: MediaServer, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/loop", tmp_path / "m", max_redirects=3)

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert "more than 3 times" in failure.detail
    assert host.requests == ["/loop"] * 4


async def test_max_redirects_zero_refuses_any_redirect(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/hop/0", tmp_path / "m", max_redirects=0)
    assert failure.reason is FailureReason.DOWNLOAD_FAILED


async def test_a_redirect_without_location(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/no-location", tmp_path / "m")

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert failure.http_status == 302


async def test_loopback_url_is_refused_before_any_connection(
    client: httpx.AsyncClient, host: MediaServer, base_url: str, tmp_path: Path
) -> None:
    failure = await fails(client, f"{base_url}/media/1000", tmp_path / "m", allow_private=False)

    assert failure.reason is FailureReason.DOWNLOAD_FORBIDDEN
    assert "private" in failure.detail
    assert not failure.retried
    assert host.requests == []


async def test_redirect_to_a_private_address_with_private_allowed_is_followed(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    """ALLOW_PRIVATE_URLS=true (a local run): a hop to 127.0.0.1 is fine."""
    target = f"{base_url.replace('127.0.0.1', 'localhost')}/media/1000"
    result = await download(client, f"{base_url}/to?url={target}", tmp_path / "m")

    assert result.final_url == target


async def test_connection_refused_is_retried(client: httpx.AsyncClient, tmp_path: Path) -> None:
    port = free_port()  # nobody listens on it
    failure = await fails(client, f"http://127.0.0.1:{port}/media.mp4", tmp_path / "m")

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert "could not connect to http://127.0.0.1" in failure.detail
    assert failure.http_status is None


# -- a minimum transfer rate over a window (DOWNLOAD_MIN_BYTES_PER_SECOND) ----------------
#
# The test client's read timeout is 0.5 s: a drip of a piece every 0.05 s never trips it.


async def test_a_drip_under_the_minimum_rate_fails_as_too_slow(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    # 100 bytes every 0.05 s: about 2 KB/s, under 20 KB/s; 200 KB would take 100 s.
    failure = await fails(
        client,
        f"{base_url}/drip/200000?piece=100&every=0.05",
        tmp_path / "m",
        min_bytes_per_second=20_000,
        rate_window_s=0.5,
    )

    assert failure.reason is FailureReason.DOWNLOAD_FAILED
    assert failure.retried
    assert "too slow" in failure.detail
    assert "over the last 0.5 s" in failure.detail
    assert "under the minimum of 19.5 KiB/s" in failure.detail
    rate = float(failure.detail.split("too slow: ")[1].split(" KiB/s")[0])
    assert 0 < rate < 19.5


async def test_a_drip_fails_even_under_a_long_total_deadline_and_read_timeout(
    base_url: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=30.0) as patient:
        failure = await fails(
            patient,
            f"{base_url}/drip/200000?piece=1&every=0.01",
            tmp_path / "m",
            min_bytes_per_second=10_000,
            rate_window_s=0.3,
            total_timeout_s=60.0,
        )
    assert "too slow" in failure.detail


async def test_a_small_file_that_ends_within_the_window_is_not_judged(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    # 2,000 bytes in pieces of 500 every 0.05 s: far under the minimum, but the file
    # ends before the first window does.
    result = await download(
        client,
        f"{base_url}/drip/2000?piece=500&every=0.05",
        tmp_path / "m",
        min_bytes_per_second=1_000_000,
        rate_window_s=30.0,
    )
    assert result.num_bytes == 2000
    assert (tmp_path / "m").read_bytes() == body_bytes(2000)


async def test_a_fast_download_passes_the_rate_check(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    result = await download(
        client,
        f"{base_url}/drip/600000?piece=60000&every=0.01",
        tmp_path / "m",
        min_bytes_per_second=10_000,
        rate_window_s=0.2,
    )
    assert result.num_bytes == 600_000


async def test_a_minimum_rate_of_zero_turns_the_check_off(
    client: httpx.AsyncClient, base_url: str, tmp_path: Path
) -> None:
    result = await download(
        client,
        f"{base_url}/drip/300?piece=100&every=0.05",
        tmp_path / "m",
        min_bytes_per_second=0,
        rate_window_s=0.01,
    )
    assert result.num_bytes == 300
