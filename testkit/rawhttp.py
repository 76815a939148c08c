"""A small HTTP/1.1 server on raw asyncio streams, the base of every peer in the kit.

Not an ASGI app: a peer controls the socket itself, so it can stop listening (connection
refused), abort open connections with a TCP reset, send half a body, trickle bytes, or
lie about a length. It keeps connections alive between requests like a real server.

A peer runs in the caller's event loop (``async with peer:`` or ``start()``/``stop()``),
or, with :class:`InThread`, in an event loop of its own in a daemon thread: so a
benchmark's own work, or a synchronous test, does not delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from testkit.ports import free_port

T = TypeVar("T")

REASONS = {
    200: "OK",
    204: "No Content",
    302: "Found",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: bytes


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or cut-off server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def write_response(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """A whole response; ``headers`` may override the Content-Length (to lie about it)."""
    writer.write(response_head(status, {"content-length": str(len(body)), **(headers or {})}))
    writer.write(body)
    await writer.drain()


async def until_hung_up(reader: asyncio.StreamReader, timeout: float = 3600) -> None:
    """Wait until the client closes the connection (or ``timeout``)."""
    with contextlib.suppress(Exception):
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass


class HttpServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that can go down and come back on its port.

    Subclasses answer in :meth:`handle`. ``hung_up`` is set whenever a connection ends.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.hung_up = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def close(self) -> None:
        """Stop, and release whatever else the peer holds."""
        await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer ``request``; return ``False`` when the connection must not be reused."""
        raise NotImplementedError

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._connections.add(writer)
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                keep = await self.handle(request, reader, writer)
                if not keep or request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:  # by stop(): the connection's end, not an error
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._connections.discard(writer)
            self.hung_up.set()
            if not writer.transport.is_closing():
                writer.close()


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection, its body read whole; ``None`` at its end."""
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


class InThread:
    """Peers in an event loop of their own, in a daemon thread.

    ``with InThread(media, receiver):`` starts them and closes them on the way out; their
    records (``deliveries``, ``log``, ...) may be read from the caller's thread.
    """

    def __init__(self, *servers: HttpServer) -> None:
        self.servers = servers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` in the peers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        for server in self.servers:
            self.call(server.start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        for server in self.servers:
            with contextlib.suppress(Exception):
                self.call(server.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> InThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
