"""Webhook delivery, signed per the Standard Webhooks specification.

Headers ``webhook-id`` (the same on every retry of one message), ``webhook-timestamp``
(unix seconds) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` keyed with the base64 part of the tenant's ``whsec_``
secret). Any 2xx within the timeout is delivered; redirects are not followed, and the
receiver's address goes through the same private-address guard as media URLs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from transcriber_service.errors import describe
from transcription_core.retry_after import parse_retry_after
from transcription_core.urls import UnsafeUrl, check_resolved_host, check_url


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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

    def __init__(self, http: httpx.AsyncClient, *, timeout: float, allow_private: bool) -> None:
        self._http = http
        self._timeout = timeout
        self._allow_private = allow_private

    async def send(self, url: str, secret: str, message_id: str, body: bytes) -> Delivery:
        """POST one message; ``body`` is the same bytes on every retry of ``message_id``."""
        started = time.perf_counter()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
            "user-agent": "transcription-service-webhooks/1",
        }
        try:
            check_url(url, allow_private=self._allow_private)
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            await check_resolved_host(parts.hostname or "", port, allow_private=self._allow_private)
            response = await self._http.post(
                url,
                content=body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            )
        except UnsafeUrl as exc:
            return Delivery(
                False, None, None, f"webhook URL refused: {exc}", time.perf_counter() - started
            )
        except Exception as exc:  # whatever the URL or the peer does, a failed delivery
            return Delivery(
                False, None, None, f"webhook failed: {describe(exc)}", time.perf_counter() - started
            )
        seconds = time.perf_counter() - started
        if 200 <= response.status_code < 300:
            return Delivery(True, response.status_code, None, "delivered", seconds)
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Delivery(
            False,
            response.status_code,
            retry_after,
            f"webhook receiver answered HTTP {response.status_code}",
            seconds,
        )
