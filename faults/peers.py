"""Loopback peers of the service, each one able to misbehave on cue.

They are plain asyncio servers (a small HTTP/1.1 server with keep-alive), not ASGI
apps, so a drill controls the socket itself: it can stop listening (connection
refused), abort open connections, send half a body and then a TCP reset, or trickle
bytes. All run in the drill's own event loop.

* :class:`MediaServer` serves ``tests/data`` files at ``/m/{token}/{behaviour}/{file}``;
  the behaviour is part of the URL, so each job carries its own fault.
* :class:`WebhookReceiver` records every delivery (headers, body, what it answered,
  whether the Standard Webhooks signature verified) in memory and in a JSONL file.
* :class:`ModelProxy` forwards to the real model server, answering 500 or 503 to a
  share of the chunks, or not listening at all while it is "down".
* :class:`LoadBalancer` spreads TCP connections over the transcriber replicas and skips
  a replica that refuses the connection (what a Knative service does for a dead pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
#: 169.254.169.254 (a cloud metadata service) inside a 6to4 address.
SIX_TO_FOUR_METADATA_URL = "http://[2002:a9fe:a9fe::1]/latest/meta-data/"

_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or cut-off server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def write_response(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    merged = {"content-length": str(len(body)), **(headers or {})}
    head += [f"{k}: {v}" for k, v in merged.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


class HttpServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that can go down and come back on its port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._connection, "127.0.0.1", self.port, reuse_address=True
            )

    async def stop(self) -> None:
        """Stop listening and cut every open connection: clients see refused or reset."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            reset_connection(writer)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer ``request``; return ``False`` when the connection must not be reused."""
        raise NotImplementedError

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                keep = await self.handle(request, reader, writer)
                if not keep or request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._connections.discard(writer)
            if not writer.transport.is_closing():
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if size == 0:
                break
        body = b"".join(parts)
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body)


# --- the media server -----------------------------------------------------------------


@dataclass
class MediaLog:
    at: float
    token: str
    behaviour: str
    file: str
    outcome: str


class MediaServer(HttpServer):
    """``GET /m/{token}/{behaviour}/{file}``; the behaviour is one of:

    ``ok``           the file, at once
    ``slow``         the file in small pieces over about ``slow_seconds``
    ``reset{N}``     the first N requests: headers, half the body, then a TCP reset
    ``stall{N}``     the first N requests: headers and a first piece, then nothing
    ``status{C}``    always HTTP C (403: an expired presigned URL; 404: gone)
    ``status{C}x{N}`` the first N requests HTTP C, then the file
    ``drip``         hostile: headers, then one byte every ``drip_seconds`` (never a stall
                     long enough for a read timeout), until the client hangs up
    ``redirect6to4`` hostile: a redirect to ``http://[2002:a9fe:a9fe::1]/``, a 6to4
                     address that embeds the cloud metadata service's 169.254.169.254
    """

    def __init__(self, slow_seconds: float = 3.0, drip_seconds: float = 0.5) -> None:
        super().__init__()
        self.slow_seconds = slow_seconds
        self.drip_seconds = drip_seconds
        self.hits: Counter[str] = Counter()
        self.log: list[MediaLog] = []
        self._files: dict[str, bytes] = {}

    def media_url(self, token: str, behaviour: str, file: str) -> str:
        return f"{self.url}/m/{token}/{behaviour}/{file}"

    def _file(self, name: str) -> bytes | None:
        if name not in self._files:
            path = DATA / name
            if not path.is_file() or "/" in name:
                return None
            self._files[name] = path.read_bytes()
        return self._files[name]

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        parts = request.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "m":
            await write_response(writer, 404)
            return True
        _, token, behaviour, name = parts
        self.hits[token] += 1
        nth = self.hits[token]
        body = self._file(name)

        def note(outcome: str) -> None:
            self.log.append(MediaLog(time.time(), token, behaviour, name, outcome))

        if body is None:
            note("404 no such file")
            await write_response(writer, 404)
            return True
        ctype = {"content-type": "application/octet-stream"}
        kind, count = _parse_behaviour(behaviour)
        if kind == "status":
            code, first = count
            if first is None or nth <= first:
                note(f"HTTP {code}")
                await write_response(writer, code, b"denied\n")
                return True
        elif kind == "reset" and nth <= count:
            note("reset mid-body")
            await write_response(writer, 200, b"", {**ctype, "content-length": str(len(body))})
            writer.write(body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            reset_connection(writer)
            return False
        elif kind == "stall" and nth <= count:
            note("stalled mid-body")
            await write_response(writer, 200, b"", {**ctype, "content-length": str(len(body))})
            writer.write(body[:4096])
            await writer.drain()
            with contextlib.suppress(Exception):  # until the client gives up and hangs up
                await asyncio.wait_for(reader.read(), 120)
            return False
        elif kind == "drip":
            note("drip")
            await write_response(writer, 200, b"", {**ctype, "content-length": str(len(body))})
            for byte in body[:600]:  # at most ~5 minutes, or until the client hangs up
                if writer.transport.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
            return False
        elif kind == "redirect6to4":
            note("redirect to 6to4")
            await write_response(writer, 302, b"", {"location": SIX_TO_FOUR_METADATA_URL})
            return True
        elif kind == "slow":
            note("slow")
            await write_response(writer, 200, b"", {**ctype, "content-length": str(len(body))})
            pieces = 30
            step = -(-len(body) // pieces)
            for start in range(0, len(body), step):
                writer.write(body[start : start + step])
                await writer.drain()
                await asyncio.sleep(self.slow_seconds / pieces)
            return True
        note("200")
        await write_response(writer, 200, body, ctype)
        return True


def _parse_behaviour(text: str) -> tuple[str, Any]:
    if text.startswith("status"):
        code, _, first = text[len("status") :].partition("x")
        return "status", (int(code), int(first) if first else None)
    for kind in ("reset", "stall"):
        if text.startswith(kind):
            return kind, int(text[len(kind) :] or 1)
    return text, None


# --- the webhook receiver ---------------------------------------------------------------


@dataclass
class Delivery:
    at: float
    tenant: str
    webhook_id: str
    headers: dict[str, str]
    body: str
    answered: int
    signature_ok: bool
    signature_error: str | None
    type: str | None
    job_id: str | None

    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver(HttpServer):
    """``POST /hook/{tenant}``: verifies with the tenant's secret, logs, and answers.

    ``answer`` is 200 normally; set it to 503 (with ``retry_after``) to refuse. To be
    down altogether, ``await stop()``: the port then refuses connections.

    ``POST /hook/{tenant}/{behaviour}`` is a hostile receiver, whatever ``answer`` says:

    ``drip``  the response's status line and headers one byte every ``drip_seconds``: a
              per-read timeout never fires, only a deadline on the whole exchange does
              (logged as answered 0: the sender never gets an answer)
    ``huge``  200 at once, then a body of ``huge_bytes`` (1 GiB) streamed until the sender
              hangs up (logged as answered 200; ``huge_sent`` counts the bytes that left)
    """

    secrets: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    answer: int = 200
    retry_after: str | None = None
    #: Seconds to wait before answering (longer than the sender's timeout: it gives up,
    #: although the message arrived, and sends it again: an at-least-once duplicate).
    delay: float = 0.0
    drip_seconds: float = 0.5
    huge_bytes: int = 1 << 30
    huge_sent: int = 0
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def hook_url(self, tenant: str) -> str:
        return f"{self.url}/hook/{tenant}"

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or len(parts) not in (2, 3) or parts[0] != "hook":
            await write_response(writer, 404)
            return True
        tenant = parts[1]
        hostile = parts[2] if len(parts) == 3 else None
        ok, error = False, None
        try:
            Webhook(self.secrets[tenant]).verify(request.body, request.headers)
            ok = True
        except Exception as exc:  # any failure to verify is recorded, not raised
            error = f"{type(exc).__name__}: {exc}"
        kind = job_id = None
        with contextlib.suppress(Exception):
            payload = json.loads(request.body)
            kind, job_id = payload.get("type"), payload.get("data", {}).get("id")
        status = {"drip": 0, "huge": 200}.get(hostile or "", self.answer)
        delivery = Delivery(
            time.time(),
            tenant,
            request.headers.get("webhook-id", ""),
            request.headers,
            request.body.decode("utf-8", "replace"),
            status,
            ok,
            error,
            kind,
            job_id,
        )
        self.deliveries.append(delivery)
        if self.log_path is not None:
            with self.log_path.open("a") as out:
                out.write(json.dumps(delivery.__dict__) + "\n")
        if hostile == "drip":
            head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"
            for byte in head:
                if writer.transport.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
            return False
        if hostile == "huge":
            await self._huge(writer)
            return False
        headers = {"retry-after": self.retry_after} if status != 200 and self.retry_after else {}
        if self.delay:
            await asyncio.sleep(self.delay)
        await write_response(writer, status, b"ok\n" if status == 200 else b"busy\n", headers)
        return True

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {self.huge_bytes}\r\n\r\n".encode())
        piece = b"x" * (1 << 20)
        left = self.huge_bytes
        while left > 0 and not writer.transport.is_closing():
            chunk = piece[: min(left, len(piece))]
            writer.write(chunk)
            await writer.drain()  # raises once the sender has hung up
            self.huge_sent += len(chunk)
            left -= len(chunk)


# --- the model-server proxy -------------------------------------------------------------


class ModelProxy(HttpServer):
    """Forwards to the real model server. ``fail_ratio`` of the ``/v1/`` requests get a
    500 or a 503 (with ``Retry-After: 1``) instead, at random; ``delay_seconds`` holds each
    ``/v1/`` request that long first (a slower model); ``stop()`` takes it down."""

    def __init__(self, target: str, seed: int = 7) -> None:
        super().__init__()
        self.target = target.rstrip("/")
        self.fail_ratio = 0.0
        self.delay_seconds = 0.0
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=300)
        await super().start()

    async def close(self) -> None:
        await self.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if request.path.startswith("/v1/") and self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if request.path.startswith("/v1/") and self.rng.random() < self.fail_ratio:
            if self.rng.random() < 0.5:
                self.counts["answered 500"] += 1
                await write_response(writer, 500, b'{"detail":"injected"}')
            else:
                self.counts["answered 503"] += 1
                await write_response(writer, 503, b'{"detail":"injected"}', {"retry-after": "1"})
            return True
        assert self._http is not None
        try:
            upstream = await self._http.request(
                request.method,
                self.target + request.path + (f"?{request.query}" if request.query else ""),
                content=request.body,
                headers={"content-type": request.headers.get("content-type", "")},
            )
        except httpx.HTTPError:
            self.counts["upstream error"] += 1
            await write_response(writer, 502)
            return True
        if request.path.startswith("/v1/"):
            self.counts["forwarded"] += 1
        await write_response(
            writer,
            upstream.status_code,
            upstream.content,
            {"content-type": upstream.headers.get("content-type", "application/json")},
        )
        return True


# --- the load balancer ------------------------------------------------------------------


class LoadBalancer:
    """Round-robin TCP balancing over ``backends``; a backend that refuses is skipped."""

    def __init__(self, backends: list[str]) -> None:
        self.port = free_port()
        self.backends = backends  # base URLs; the list may change while it runs
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                self.refused += 1
                reset_connection(writer)
                return
            up_reader, up_writer = upstream
            await _pipe_both(reader, writer, up_reader, up_writer)
        except asyncio.CancelledError:
            reset_connection(writer)
        finally:
            self._tasks.discard(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        backends = list(self.backends)
        for _ in range(len(backends)):
            target = urlsplit(backends[self._next % len(backends)])
            self._next += 1
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(target.hostname, target.port), 2
                )
            except (OSError, TimeoutError):
                continue
        return None


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other abruptly too, as a dead pod's proxy would.
            dst.transport.abort()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
