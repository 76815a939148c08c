"""Download a job's media URL to a file, checking every hop against the private-address guard.

:func:`download_to_file` streams the body to disk (never the whole body in memory) and
follows redirects itself, so that each URL it is about to connect to, the client's own and
every ``Location`` after it, first passes ``transcription_core.urls.check_url`` and
``check_resolved_host`` (all the addresses the host resolves to). A media host cannot bounce
us to ``169.254.169.254`` or into the cluster network.

Timeouts: the caller's ``httpx.AsyncClient`` carries the connect, read and pool timeouts
(its read timeout is what turns a server that stalls mid-body into a failure, so it must
have one); ``total_timeout_s`` bounds the whole download, redirects included. A server that
sends a byte now and then never trips a read timeout, so the body must also keep a
minimum rate: each ``min_bytes_per_second * rate_window_s`` bytes of it must come within
``rate_window_s`` seconds (a window starts when the last one's bytes are in), or the
download fails at the end of that window, with the rate it measured. The first window
starts when the response headers arrive (waiting for them is the read timeout's job); a
body that ends before its window does is never judged, so a small file is never "too
slow", and a large one holds a worker at most one window at under the minimum rate.

What each outcome becomes (a :class:`~transcriber_service.errors.DownloadError`):

============================================  ======================  =========
outcome                                       failure_reason          retried
============================================  ======================  =========
HTTP 401 or 403                               ``DOWNLOAD_FORBIDDEN``  no
HTTP 404 or 410                               ``DOWNLOAD_NOT_FOUND``  no
URL or redirect refused (private address,     ``DOWNLOAD_FORBIDDEN``  no
not http(s), credentials in it)
any other non-2xx, a redirect with no         ``DOWNLOAD_FAILED``     yes
``Location``, more than ``max_redirects``
timeout, stall, connection or DNS failure,    ``DOWNLOAD_FAILED``     yes
a body cut short, over ``total_timeout_s``,
under the minimum rate for a window ("too
slow", with the rate measured)
``Content-Length`` or the body over           ``MEDIA_TOO_LARGE``     no
``max_bytes``
============================================  ======================  =========

``failure_detail`` names the HTTP status and the host, never the full URL (a presigned
URL's query string is a credential). The partly written file is removed on any failure.

Known gap: the address checked and the address httpx then connects to come from two
lookups, so a host whose DNS answer changes in between (DNS rebinding) is not caught
here; a network policy that denies the workers private egress is the complete answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

import httpx

from transcriber_service.errors import DownloadError
from transcription_core.status import FailureReason
from transcription_core.urls import Network, UnsafeUrl, check_resolved_host, check_url

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Write to disk in pieces of about this size (one thread hop per piece).
_WRITE_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    #: Bytes written to ``path`` (we ask for no content coding; if the server applies one
    #: anyway, the decoded body is written and counted against ``max_bytes``).
    num_bytes: int
    #: The URL the body came from after redirects; it may carry a signature, so do not
    #: log it in full.
    final_url: str
    #: The ``Content-Type`` the server declared, if any (informational: we decode by
    #: content, not by this).
    content_type: str | None
    redirects: int = 0


async def download_to_file(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool,
    allowed_networks: Sequence[Network] = (),
    max_redirects: int = 5,
    total_timeout_s: float | None = None,
    min_bytes_per_second: float = 0.0,
    rate_window_s: float = 60.0,
) -> DownloadResult:
    """Download ``url`` to ``dest``; raise :class:`DownloadError` (see the module docstring).

    ``client`` is the worker's long-lived client; redirects are followed here, hop by hop,
    whatever the client's own ``follow_redirects`` says. ``min_bytes_per_second`` 0 turns
    the rate check off.
    """
    if max_redirects < 0:
        raise ValueError("max_redirects cannot be negative")
    if rate_window_s <= 0:
        raise ValueError("rate_window_s must be positive")
    rate = _MinRate(min_bytes_per_second, rate_window_s)
    try:
        async with asyncio.timeout(total_timeout_s):
            return await _download(
                client,
                url,
                dest,
                max_bytes,
                (allow_private, tuple(allowed_networks)),
                max_redirects,
                rate,
            )
    except TimeoutError as exc:
        _discard(dest)
        raise DownloadError(
            FailureReason.DOWNLOAD_FAILED,
            f"the download took longer than the limit of {total_timeout_s:g} s",
        ) from exc
    except BaseException:
        _discard(dest)
        raise


async def check_hop(
    url: str, *, allow_private: bool, allowed_networks: Sequence[Network] = (), hop: int = 0
) -> None:
    """Refuse to connect to ``url`` (hop ``hop`` of a download) unless the guard allows it.

    ``DOWNLOAD_FORBIDDEN`` for a URL the guard refuses, ``DOWNLOAD_FAILED`` for a host name
    that does not resolve.
    """
    try:
        check_url(url, allow_private=allow_private, allowed_networks=allowed_networks)
        parsed = httpx.URL(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        await check_resolved_host(
            host, port, allow_private=allow_private, allowed_networks=allowed_networks
        )
    except UnsafeUrl as exc:
        if hop == 0:
            detail = f"the media URL was refused: {exc}"
        else:
            detail = f"the media URL redirected to {_origin(url)}, which was refused: {exc}"
        raise DownloadError(FailureReason.DOWNLOAD_FORBIDDEN, detail) from exc
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise DownloadError(
            FailureReason.DOWNLOAD_FORBIDDEN, f"the media URL is not valid: {exc}"
        ) from exc
    except OSError as exc:  # socket.gaierror: the name does not resolve (now)
        raise DownloadError(
            FailureReason.DOWNLOAD_FAILED,
            f"could not resolve the media host {_origin(url)}: {exc.strerror or exc}",
        ) from exc


async def _download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    max_bytes: int,
    guard: tuple[bool, tuple[Network, ...]],
    max_redirects: int,
    rate: _MinRate,
) -> DownloadResult:
    allow_private, allowed_networks = guard
    current = url
    for hop in range(max_redirects + 1):
        await check_hop(
            current, allow_private=allow_private, allowed_networks=allowed_networks, hop=hop
        )
        try:
            async with client.stream(
                "GET",
                current,
                follow_redirects=False,
                headers={"Accept-Encoding": "identity"},
            ) as response:
                if response.status_code in _REDIRECT_STATUSES:
                    current = _redirect_target(response, current)
                    continue
                _check_status(response)
                _check_length(response, max_bytes)
                num_bytes = await _stream_to_file(response, dest, max_bytes, rate, current)
                return DownloadResult(
                    path=dest,
                    num_bytes=num_bytes,
                    final_url=current,
                    content_type=response.headers.get("content-type"),
                    redirects=hop,
                )
        except httpx.HTTPError as exc:
            raise _transport_failure(exc, client, current) from exc
    raise DownloadError(
        FailureReason.DOWNLOAD_FAILED,
        f"the media URL redirected more than {max_redirects} times",
    )


def _redirect_target(response: httpx.Response, current: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise DownloadError(
            FailureReason.DOWNLOAD_FAILED,
            f"the media URL answered {_status_text(response.status_code)} without a Location",
            http_status=response.status_code,
        )
    try:
        target = httpx.URL(current).join(location).copy_with(fragment=None)
    except httpx.InvalidURL as exc:
        raise DownloadError(
            FailureReason.DOWNLOAD_FAILED,
            f"the media URL answered {_status_text(response.status_code)} "
            "with a Location that is not a valid URL",
            http_status=response.status_code,
        ) from exc
    return str(target)


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    where = f"the media URL answered {_status_text(status)}"
    if status in (401, 403):
        reason = FailureReason.DOWNLOAD_FORBIDDEN
        detail = f"{where}: the link has expired or is not authorised"
    elif status in (404, 410):
        reason = FailureReason.DOWNLOAD_NOT_FOUND
        detail = f"{where}: the media is not there"
    else:
        reason = FailureReason.DOWNLOAD_FAILED
        detail = where
    raise DownloadError(reason, detail, http_status=status)


def _check_length(response: httpx.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length")
    if declared is None or not declared.strip().isdigit():
        return
    if int(declared) > max_bytes:
        raise DownloadError(
            FailureReason.MEDIA_TOO_LARGE,
            f"the media is {_size(int(declared))}, over the limit of {_size(max_bytes)}",
            http_status=response.status_code,
        )


@dataclass(frozen=True)
class _MinRate:
    bytes_per_second: float
    window_s: float

    @property
    def window_bytes(self) -> float:
        return self.bytes_per_second * self.window_s


async def _stream_to_file(
    response: httpx.Response, dest: Path, max_bytes: int, rate: _MinRate, url: str
) -> int:
    total = 0
    #: Bytes received since the current window began.
    in_window = 0
    pending: list[bytes] = []
    pending_bytes = 0
    file: BinaryIO = await asyncio.to_thread(dest.open, "wb")
    try:
        # The window's end is a deadline, so a peer that sends nothing more is judged on
        # time too; each window that brings its bytes starts the next one at once.
        window_timeout = rate.window_s if rate.bytes_per_second > 0 else None
        async with asyncio.timeout(window_timeout) as window:
            async for piece in response.aiter_bytes():
                total += len(piece)
                if total > max_bytes:
                    raise DownloadError(
                        FailureReason.MEDIA_TOO_LARGE,
                        f"the media is over the limit of {_size(max_bytes)}",
                        http_status=response.status_code,
                    )
                in_window += len(piece)
                if window_timeout is not None and in_window >= rate.window_bytes:
                    window.reschedule(asyncio.get_running_loop().time() + window_timeout)
                    in_window = 0
                pending.append(piece)
                pending_bytes += len(piece)
                if pending_bytes >= _WRITE_BUFFER_BYTES:
                    await asyncio.to_thread(file.write, b"".join(pending))
                    pending.clear()
                    pending_bytes = 0
            if pending:
                await asyncio.to_thread(file.write, b"".join(pending))
    except TimeoutError as exc:
        if not window.expired():
            raise
        raise DownloadError(
            FailureReason.DOWNLOAD_FAILED,
            f"the download from {_origin(url)} was too slow: "
            f"{in_window / rate.window_s / 1024:.1f} KiB/s over the last {rate.window_s:g} s, "
            f"under the minimum of {rate.bytes_per_second / 1024:.1f} KiB/s",
            http_status=response.status_code,
        ) from exc
    finally:
        await asyncio.to_thread(file.close)
    return total


def _transport_failure(exc: httpx.HTTPError, client: httpx.AsyncClient, url: str) -> DownloadError:
    host = _origin(url)
    if isinstance(exc, httpx.ReadTimeout):
        detail = f"{host} sent no data for {_timeout(client.timeout.read)}"
    elif isinstance(exc, httpx.ConnectTimeout):
        detail = f"could not connect to {host} within {_timeout(client.timeout.connect)}"
    elif isinstance(exc, httpx.TimeoutException):
        detail = f"timed out talking to {host}"
    elif isinstance(exc, httpx.ConnectError):
        detail = f"could not connect to {host}: {exc}"
    elif isinstance(exc, httpx.RemoteProtocolError):
        detail = f"{host} broke off the response: {exc}"
    else:
        detail = f"the download from {host} failed: {type(exc).__name__}: {exc}"
    return DownloadError(FailureReason.DOWNLOAD_FAILED, detail)


def _discard(dest: Path) -> None:
    """Remove a partial download, synchronously: it must happen even while cancelled, and
    an unlink is one quick metadata operation."""
    dest.unlink(missing_ok=True)


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: enough to say where, without the signature."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}"


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} ({HTTPStatus(status).phrase})"
    except ValueError:
        return f"HTTP {status}"


def _size(num_bytes: int) -> str:
    if num_bytes >= 1 << 20:
        return f"{num_bytes / (1 << 20):.1f} MiB ({num_bytes} bytes)"
    return f"{num_bytes} bytes"


def _timeout(value: float | None) -> str:
    return "too long" if value is None else f"{value:g} s"
