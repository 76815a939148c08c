"""The media host: files with a fault named in their URL, and made-up bodies of any shape.

One :class:`MediaServer` (raw HTTP/1.1, :mod:`testkit.rawhttp`) answers two families of
``GET`` paths.

**Files** of ``root`` (tests/data unless told otherwise), each URL carrying its own
fault, so each job of a stream can have its own: ``/m/{token}/{behaviour}/{file}``
(:meth:`MediaServer.media_url`), where ``token`` counts the requests for that URL and
``behaviour`` is one of

    ``ok``            the file (streamed from disk in 1 MiB pieces: files may be GiBs)
    ``slow``          the file in 30 pieces over about ``slow_seconds``
    ``reset{N}``      the first N requests: headers, half the body, then a TCP reset
    ``stall{N}``      the first N requests: headers and a first piece, then nothing
    ``status{C}``     always HTTP C (403: an expired presigned URL; 404: gone)
    ``status{C}x{N}`` the first N requests HTTP C, then the file
    ``drip``          hostile: headers, then one byte every ``drip_seconds`` (never a stall
                      long enough for a read timeout), until the client hangs up
    ``redirect6to4``  hostile: a redirect to ``http://[2002:a9fe:a9fe::1]/``, a 6to4
                      address that embeds the cloud metadata service's 169.254.169.254

``log`` has one :class:`MediaLog` a request: when it started and ended, the bytes sent,
and what happened.

**Made-up bodies** (deterministic bytes, :func:`body_bytes`), for the download's bounds:

    /media/{n}          200, ``n`` bytes with a Content-Length, in 64 KiB pieces
    /chunked/{n}        200, ``n`` bytes with no Content-Length (chunked encoding)
    /huge               200, Content-Length 10 GB, then nothing until the client hangs up
    /short/{n}          200, Content-Length ``n`` but half the body, then the end
    /stall              200, a first piece, then nothing until the client hangs up
    /drip/{n}?piece=B&every=S
                        200, Content-Length ``n``, then ``B`` bytes every ``S`` seconds
                        (a slow peer that never trips a read timeout)
    /status/{code}      that status, a short body
    /hop/{k}            302 to /hop/{k-1} (relative), /hop/0 to /media/1000 (absolute)
    /to?url=U           302 to ``U``
    /loop               302 to itself
    /no-location        302 without a Location

``requests`` lists every path asked for, so a test can see that nothing was fetched.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from testkit.data import DATA
from testkit.rawhttp import (
    HttpServer,
    Request,
    reset_connection,
    response_head,
    until_hung_up,
    write_response,
)

PIECE = 64 * 1024
#: 169.254.169.254 (a cloud metadata service) inside a 6to4 address.
SIX_TO_FOUR_METADATA_URL = "http://[2002:a9fe:a9fe::1]/latest/meta-data/"
FILE_PIECE = 1 << 20
OCTETS = {"content-type": "application/octet-stream"}
MPEG = {"content-type": "audio/mpeg"}


def body_bytes(n: int) -> bytes:
    """The deterministic body /media/{n} and /chunked/{n} send."""
    pattern = bytes(range(256))
    return (pattern * (n // 256 + 1))[:n]


@dataclass
class MediaLog:
    at: float  # time.time() when the request came
    token: str
    behaviour: str
    file: str
    outcome: str
    ended: float | None = None  # time.time() when the last byte was handed to the socket
    num_bytes: int = 0


class MediaServer(HttpServer):
    """Files of ``root`` at ``/m/{token}/{behaviour}/{file}``, and made-up bodies; see the
    module's docstring."""

    def __init__(
        self, root: Path = DATA, slow_seconds: float = 3.0, drip_seconds: float = 0.5
    ) -> None:
        super().__init__()
        self.root = root
        self.slow_seconds = slow_seconds
        self.drip_seconds = drip_seconds
        self.hits: Counter[str] = Counter()
        self.log: list[MediaLog] = []
        self.requests: list[str] = []
        self._files: dict[str, bytes] = {}

    def media_url(self, token: str, behaviour: str, file: str) -> str:
        return f"{self.url}/m/{token}/{behaviour}/{file}"

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.requests.append(request.path)
        parts = request.path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "m":
            return await self._file_request(parts[1], parts[2], parts[3], reader, writer)
        return await _made_up(request, parts, reader, writer)

    def _path(self, name: str) -> Path | None:
        path = self.root / name
        return path if path.is_file() and name not in ("", ".", "..") else None

    def _bytes(self, path: Path) -> bytes:
        if path.name not in self._files:
            self._files[path.name] = path.read_bytes()
        return self._files[path.name]

    async def _file_request(
        self,
        token: str,
        behaviour: str,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        self.hits[token] += 1
        nth = self.hits[token]
        entry = MediaLog(time.time(), token, behaviour, name, "")
        self.log.append(entry)
        path = self._path(name)
        if path is None:
            entry.outcome = "404 no such file"
            await write_response(writer, 404)
            return True
        kind, count = _parse_behaviour(behaviour)
        size = path.stat().st_size
        head = response_head(200, {**OCTETS, "content-length": str(size)})
        if kind == "status":
            code, first = count
            if first is None or nth <= first:
                entry.outcome = f"HTTP {code}"
                await write_response(writer, code, b"denied\n")
                return True
        elif kind == "reset" and nth <= count:
            entry.outcome = "reset mid-body"
            writer.write(head + self._bytes(path)[: size // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            reset_connection(writer)
            return False
        elif kind == "stall" and nth <= count:
            entry.outcome = "stalled mid-body"
            writer.write(head + self._bytes(path)[:4096])
            await writer.drain()
            await until_hung_up(reader, 120)  # until the client gives up and hangs up
            return False
        elif kind == "drip":
            entry.outcome = "drip"
            writer.write(head)
            for byte in self._bytes(path)[:600]:  # at most ~5 minutes, or until it hangs up
                if writer.transport.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                entry.num_bytes += 1
                await asyncio.sleep(self.drip_seconds)
            return False
        elif kind == "redirect6to4":
            entry.outcome = "redirect to 6to4"
            await write_response(writer, 302, b"", {"location": SIX_TO_FOUR_METADATA_URL})
            return True
        elif kind == "slow":
            entry.outcome = "slow"
            body = self._bytes(path)
            writer.write(head)
            pieces = 30
            step = -(-size // pieces)
            for start in range(0, size, step):
                writer.write(body[start : start + step])
                await writer.drain()
                entry.num_bytes += len(body[start : start + step])
                await asyncio.sleep(self.slow_seconds / pieces)
            entry.ended = time.time()
            return True
        entry.outcome = "200"
        writer.write(head)
        with path.open("rb") as media:
            while piece := media.read(FILE_PIECE):
                writer.write(piece)
                await writer.drain()
                entry.num_bytes += len(piece)
        entry.ended = time.time()
        return True


def _parse_behaviour(text: str) -> tuple[str, Any]:
    if text.startswith("status"):
        code, _, first = text[len("status") :].partition("x")
        return "status", (int(code), int(first) if first else None)
    for kind in ("reset", "stall"):
        if text.startswith(kind):
            return kind, int(text[len(kind) :] or 1)
    return text, None


async def _made_up(
    request: Request, parts: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """The made-up bodies; returns whether the connection may be reused."""
    query = parse_qs(request.query)
    head, arg = parts[0], parts[1] if len(parts) > 1 else ""
    if head == "media":
        body = body_bytes(int(arg))
        writer.write(response_head(200, {**MPEG, "content-length": str(len(body))}))
        await _pieces(writer, body)
    elif head == "chunked":
        writer.write(response_head(200, {**MPEG, "transfer-encoding": "chunked"}))
        body = body_bytes(int(arg))
        for start in range(0, len(body), PIECE):
            part = body[start : start + PIECE]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    elif head == "huge":
        writer.write(response_head(200, {**MPEG, "content-length": str(10 * 1024**3)}))
        await writer.drain()
        await until_hung_up(reader)
        return False
    elif head == "short":
        writer.write(response_head(200, {**MPEG, "content-length": arg}))
        writer.write(body_bytes(int(arg) // 2))
        await writer.drain()
        return False
    elif head == "stall":
        writer.write(response_head(200, {**MPEG, "content-length": "1000000"}) + b"x" * 1000)
        await writer.drain()
        await until_hung_up(reader)
        return False
    elif head == "drip":
        piece, every = int(query["piece"][0]), float(query["every"][0])
        body = body_bytes(int(arg))
        writer.write(response_head(200, {**MPEG, "content-length": arg}))
        for start in range(0, len(body), piece):
            if start:
                await asyncio.sleep(every)
            writer.write(body[start : start + piece])
            await writer.drain()  # raises once the client has hung up
    elif head == "status":
        await write_response(writer, int(arg), b"nope\n", MPEG)
    elif head == "hop":
        k = int(arg)
        if k > 0:
            await _redirect(writer, f"/hop/{k - 1}")
        else:
            await _redirect(writer, f"http://{request.headers['host']}/media/1000")
    elif head == "to":
        await _redirect(writer, query["url"][0])
    elif head == "loop":
        await _redirect(writer, "/loop")
    elif head == "no-location":
        await write_response(writer, 302, b"", MPEG)
    else:
        await write_response(writer, 404, b"", MPEG)
    return True


async def _pieces(writer: asyncio.StreamWriter, body: bytes) -> None:
    for start in range(0, len(body), PIECE):
        writer.write(body[start : start + PIECE])
        await writer.drain()


async def _redirect(writer: asyncio.StreamWriter, location: str) -> None:
    await write_response(writer, 302, b"", {**MPEG, "location": location})
