"""A TCP load balancer over replicas: round robin, skipping a replica that refuses the
connection (what a Knative service does for a dead pod); when the side it relays from ends,
it ends the other abruptly too, as a dead pod's proxy would."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from testkit.ports import free_port
from testkit.rawhttp import reset_connection


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
