"""Webhook delivery, signed per the Standard Webhooks specification.

Headers ``webhook-id`` (the same on every retry of one message), ``webhook-timestamp``
(unix seconds) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` keyed with the base64 part of the tenant's ``whsec_``
secret; during a secret rotation's overlap, a second such signature with the previous
secret, space separated). Any 2xx within the deadline is delivered; redirects are not
followed, and the receiver's address goes through the same private-address guard as media URLs.

A receiver is a peer we do not control, so every exchange is bounded: one deadline
(``WEBHOOK_TIMEOUT_SECONDS``) covers resolving, connecting, sending and the answer; the
answer's body is never read for a 2xx and read up to ``WEBHOOK_RESPONSE_MAX_BYTES`` (kept
for ``failure_detail``) otherwise; and any exception, whatever its type, is a failed
delivery whose detail names it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from transcriber_service.errors import describe
from transcription_core.retry_after import parse_retry_after
from transcription_core.urls import Network, UnsafeUrl, check_resolved_host, check_url


def sign(secret: str | Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message: one signature per secret,
    space separated (two while a rotated secret's overlap lasts; a receiver verifies with
    either)."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for key in keys:
        raw = base64.b64decode(key.removeprefix("whsec_"))
        digest = hmac.new(raw, signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


def message_body(event: str, job: dict[str, Any]) -> bytes:
    payload = {
        "type": event,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": job,
    }
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    #: The receiver's HTTP status, if it answered.
    status: int | None
    #: Seconds the receiver asked us to wait (``Retry-After`` on 429 and 503).
    retry_after: float | None
    detail: str
    seconds: float


class WebhookSender:
    """Posts signed messages with the worker's long-lived client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        allow_private: bool,
        allowed_networks: Sequence[Network] = (),
        max_response_bytes: int = 512,
    ) -> None:
        self._http = http
        self._timeout = timeout
        self._allow_private = allow_private
        self._allowed_networks = tuple(allowed_networks)
        self._max_response_bytes = max_response_bytes

    async def send(
        self, url: str, secret: str | Sequence[str], message_id: str, body: bytes
    ) -> Delivery:
        """POST one message, signed with each of the tenant's ``secret`` (the current one,
        and the previous one during a rotation's overlap); ``body`` is the same bytes on
        every retry of ``message_id``.

        Never raises (but for cancellation): whatever the URL or the receiver does, the
        result is a :class:`Delivery`, all within the one deadline ``timeout``.
        """
        started = time.perf_counter()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
            "user-agent": "transcription-service-webhooks/1",
        }
        status: int | None = None
        retry_after: float | None = None
        kept = b""
        late = ""
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                check_url(
                    url,
                    allow_private=self._allow_private,
                    allowed_networks=self._allowed_networks,
                )
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                await check_resolved_host(
                    parts.hostname or "",
                    port,
                    allow_private=self._allow_private,
                    allowed_networks=self._allowed_networks,
                )
                async with self._http.stream(
                    "POST",
                    url,
                    content=body,
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response:
                    status = response.status_code
                    if status in (429, 503):
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
                    if not 200 <= status < 300:  # a few bytes of why, never the whole body
                        async for piece in response.aiter_raw():
                            kept += piece[: self._max_response_bytes - len(kept)]
                            if len(kept) >= self._max_response_bytes:
                                break
                # Leaving the block unread closes the connection: the rest is never read.
        except UnsafeUrl as exc:
            return Delivery(
                False, None, None, f"webhook URL refused: {exc}", time.perf_counter() - started
            )
        except TimeoutError as exc:
            if not deadline.expired():
                return self._failed(exc, started)
            late = f"no answer within the {self._timeout:g} s deadline"
            if status is None:
                return Delivery(
                    False, None, None, f"webhook failed: {late}", time.perf_counter() - started
                )
        except Exception as exc:  # whatever the URL or the peer does, a failed delivery
            if status is None:
                return self._failed(exc, started)
        seconds = time.perf_counter() - started
        if 200 <= status < 300:
            return Delivery(True, status, None, "delivered", seconds)
        detail = f"webhook receiver answered HTTP {status}"
        if text := printable(kept):
            detail += f": {text}"
        if late:
            detail += f" (its body: {late})"
        return Delivery(False, status, retry_after, detail, seconds)

    @staticmethod
    def _failed(exc: BaseException, started: float) -> Delivery:
        return Delivery(
            False, None, None, f"webhook failed: {describe(exc)}", time.perf_counter() - started
        )


def printable(raw: bytes) -> str:
    """A receiver's bytes as one line of printable text, for a ``failure_detail``."""
    text = raw.decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
