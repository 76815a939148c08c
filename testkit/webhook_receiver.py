"""The webhook receiver: records every delivery, verifies its signature, answers as told,
or answers hostilely.

``POST /hook``, ``/hook/{tenant}`` or ``/hook/{tenant}/{behaviour}``
(:meth:`WebhookReceiver.hook_url`). Each delivery is kept as a :class:`Delivery` (and, with
``log_path``, a line of JSON): when it came, its headers and body, what was answered, and
whether its Standard Webhooks signature verifies with ``secrets[tenant]``.

How it answers, without a behaviour: the next of ``answers`` (a status, or a status and
headers) while there are any, then ``answer`` (200; with ``retry_after`` when not 200),
after ``delay`` seconds (longer than the sender's timeout: it gives up although the message
arrived, and sends it again: an at-least-once duplicate). To be down altogether,
``await stop()``: the port then refuses connections.

Hostile behaviours, named in the URL, whatever ``answer`` says:

    ``huge``          ``huge_status`` (200) at once with a Content-Length of ``huge_bytes``
                      (1 GiB), then that body in 64 KiB pieces made as it goes, until the
                      sender hangs up (``huge_sent`` counts the bytes handed to the socket:
                      the kernel buffers a few MB more than a sender reads)
    ``drip``          a whole 200 answer, its status line and headers included, one byte
                      every ``drip_seconds``: a per-read timeout never fires, only a
                      deadline on the whole exchange does (logged as answered 0: the
                      sender never gets an answer)
    ``drip-headers``  a 200's status line, then an endless header, one byte every
                      ``drip_seconds``
    ``drip-body``     a 500 with a long Content-Length, then its body one byte every
                      ``drip_seconds``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from testkit.rawhttp import HttpServer, Request, response_head, write_response

PIECE = 64 * 1024


@dataclass
class Delivery:
    at: float  # time.time()
    tenant: str
    webhook_id: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answered: int  # 0: no answer was ever complete
    signature_ok: bool
    signature_error: str | None
    type: str | None  # the message's type, job id and job status
    job_id: str | None
    job_status: str | None
    at_monotonic: float = field(default_factory=time.monotonic)

    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "body": self.body.decode("utf-8", "replace")})


@dataclass
class WebhookReceiver(HttpServer):
    """Records, verifies and answers deliveries; see the module's docstring."""

    secrets: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    answer: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    answers: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    huge_status: int = 200
    huge_bytes: int = 1 << 30
    huge_sent: int = 0
    drip_seconds: float = 0.5
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def hook_url(self, tenant: str = "", behaviour: str = "") -> str:
        assert tenant or not behaviour, "a behaviour goes after a tenant"
        return "/".join([f"{self.url}/hook", *(p for p in (tenant, behaviour) if p)])

    @property
    def delivered(self) -> list[Delivery]:
        """The deliveries answered 2xx."""
        return [d for d in self.deliveries if 200 <= d.answered < 300]

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or not 1 <= len(parts) <= 3 or parts[0] != "hook":
            await write_response(writer, 404)
            return True
        tenant = parts[1] if len(parts) > 1 else ""
        hostile = parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        if hostile:
            status = {"huge": self.huge_status, "drip-body": 500}.get(hostile, 0)
        elif self.answers:
            answer = self.answers.pop(0)
            status, headers = answer if isinstance(answer, tuple) else (answer, {})
        else:
            status = self.answer
            if status != 200 and self.retry_after:
                headers = {"retry-after": self.retry_after}
        self._record(request, tenant, status)
        if hostile:
            await self._hostile(hostile, writer)
            return False
        if self.delay:
            await asyncio.sleep(self.delay)
        body = b"" if status in (204, 304) else b"ok\n" if status == 200 else b"busy\n"
        await write_response(writer, status, body, headers)
        return True

    def _record(self, request: Request, tenant: str, status: int) -> None:
        ok, error = False, None
        try:
            Webhook(self.secrets[tenant]).verify(request.body, request.headers)
            ok = True
        except Exception as exc:  # any failure to verify is recorded, not raised
            error = f"{type(exc).__name__}: {exc}"
        kind = job_id = job_status = None
        with contextlib.suppress(Exception):
            payload = json.loads(request.body)
            kind, data = payload.get("type"), payload.get("data", {})
            job_id, job_status = data.get("id"), data.get("status")
        delivery = Delivery(
            time.time(),
            tenant,
            request.headers.get("webhook-id", ""),
            request.headers,
            request.body,
            status,
            ok,
            error,
            kind,
            job_id,
            job_status,
        )
        self.deliveries.append(delivery)
        if self.log_path is not None:
            with self.log_path.open("a") as out:
                out.write(delivery.to_json() + "\n")

    async def _hostile(self, behaviour: str, writer: asyncio.StreamWriter) -> None:
        if behaviour == "huge":
            sent = 0
            head = {"content-length": str(self.huge_bytes)}
            writer.write(response_head(self.huge_status, head))
            piece = b"x" * PIECE
            while sent < self.huge_bytes and not writer.transport.is_closing():
                chunk = piece[: self.huge_bytes - sent]
                writer.write(chunk)
                await writer.drain()  # raises once the sender has hung up
                self.huge_sent += len(chunk)
                sent += len(chunk)
        elif behaviour == "drip":
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n":
                if writer.transport.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
        elif behaviour == "drip-headers":
            writer.write(b"HTTP/1.1 200 OK\r\nx-drip: ")
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
        elif behaviour == "drip-body":
            writer.write(response_head(500, {"content-length": "100000"}))
            while True:
                writer.write(b"e")
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
        else:
            await write_response(writer, 404)
