"""Hostile webhook receivers: raw HTTP/1.1 on loopback, so a test controls every byte.

Each reads one request, then answers per its behaviour:

    huge           ``status`` with a Content-Length of ``size``, then the body in 64 KiB
                   pieces, generated as it goes, until the client hangs up
    drip-headers   a 200's status line, then an endless header, one byte every ``interval``
    drip-body      a 500 with a long Content-Length, then its body one byte every ``interval``

``sent`` counts the bytes handed to the socket after the first line (the kernel buffers a
few MB more than a client reads); ``hung_up`` is set when the client closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

PIECE = 64 * 1024


@dataclass
class HostileReceiver:
    behaviour: str
    status: int = 200
    size: int = 200 * 1024**2
    interval: float = 0.5
    sent: int = 0
    requests: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.requests += 1
        if self.behaviour == "huge":
            writer.write(
                b"HTTP/1.1 %d Status\r\ncontent-length: %d\r\n\r\n" % (self.status, self.size)
            )
            piece = b"x" * PIECE
            while self.sent < self.size:
                writer.write(piece)
                await writer.drain()
                self.sent += len(piece)
        elif self.behaviour == "drip-headers":
            writer.write(b"HTTP/1.1 200 OK\r\nx-drip: ")
            while True:
                writer.write(b"a")
                await writer.drain()
                self.sent += 1
                await asyncio.sleep(self.interval)
        elif self.behaviour == "drip-body":
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100000\r\n\r\n")
            while True:
                writer.write(b"e")
                await writer.drain()
                self.sent += 1
                await asyncio.sleep(self.interval)
        # Then wait for the client to hang up.
        while await reader.read(PIECE):
            pass

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self.hung_up.set()
            with contextlib.suppress(ConnectionError):
                writer.close()


@contextlib.asynccontextmanager
async def hostile_receiver(receiver: HostileReceiver) -> AsyncIterator[str]:
    """Serve ``receiver`` on 127.0.0.1; yields its URL (any path is the same)."""
    server = await asyncio.start_server(receiver._connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        for task in list(receiver._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
