"""Clients that send their request slowly, too much of it, or one that cannot be parsed,
against the enqueue API as ``transcription serve`` runs it (its uvicorn protocol,
``EnqueueHttp``), on loopback.

Each hostile client drips bytes until the server answers or closes; what is asserted is
that the server cut it off before it finished, never how long that took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service import settings as enqueue_settings
from enqueue_service.app import EnqueueHttp, create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_tenant
from testkit.asgi import serve_app
from transcription_core import repository as repo

pytestmark = pytest.mark.postgres

READ_TIMEOUT = 1.0
MAX_HEAD = 8192


@dataclass
class Server:
    host: str
    port: int


@pytest.fixture
def bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bounds EnqueueHttp reads from the service's settings, made short."""
    monkeypatch.setenv("REQUEST_READ_TIMEOUT_SECONDS", str(READ_TIMEOUT))
    monkeypatch.setenv("MAX_REQUEST_HEAD_BYTES", str(MAX_HEAD))
    enqueue_settings.get_settings.cache_clear()
    yield
    enqueue_settings.get_settings.cache_clear()


@pytest.fixture
async def server(bounds: None, pg_url: str, pg_engine: AsyncEngine) -> AsyncIterator[Server]:
    await make_tenant(pg_engine, "org-slow")
    app = create_app(EnqueueSettings(database_url=pg_url))
    async with serve_app(app, http=EnqueueHttp) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Server(host, int(port))


async def drip(server: Server, head: bytes, then: bytes, every: float = 0.05) -> tuple[bytes, int]:
    """Send ``head`` at once, then ``then`` one byte every ``every`` seconds until the
    server answers or closes; return its answer and how many bytes were never sent."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    answer = asyncio.create_task(reader.read())  # to EOF: the server closes
    writer.write(head)
    left = len(then)
    for byte in then:
        if answer.done():
            break
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            break
        left -= 1
        await asyncio.sleep(every)
    try:
        return await asyncio.wait_for(answer, timeout=30), left
    finally:
        writer.close()


def problem_of(answer: bytes, status: int) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"application/problem+json" in head and b"connection: close" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == status
    return problem


async def job_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        rows, _ = await repo.list_jobs(conn, "org-slow")
    return len(rows)


async def test_a_client_that_drips_its_headers_is_cut_off(server: Server) -> None:
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: api\r\n"
    answer, left = await drip(server, head, b"X-Slow: " + b"a" * 400)
    assert left > 0, "the server waited for the whole drip"
    assert problem_of(answer, 408)["type"] == "/problems/request-timeout"


async def test_a_client_that_drips_its_body_is_cut_off_and_nothing_is_written(
    server: Server, pg_engine: AsyncEngine
) -> None:
    body = json.dumps(
        {"media_url": "https://m.example.com/a.mp3", "webhook_url": "https://h.example.com/t"}
    ).encode()
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answer, left = await drip(server, head, body)
    assert left > 0, "the server waited for the whole drip"
    problem_of(answer, 408)
    assert await job_count(pg_engine) == 0


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    answer, _ = await drip(server, b"", b"")
    problem_of(answer, 408)


async def test_a_head_over_the_limit_is_431(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: api\r\n" + b"X-Pad: " + b"a" * (4 * MAX_HEAD)
    answer, _ = await drip(server, head, b"")
    assert problem_of(answer, 431)["type"] == "/problems/headers-too-large"


async def test_the_deadline_is_per_request_on_a_kept_alive_connection(server: Server) -> None:
    """Two requests on one connection, the second sent after longer than the deadline
    (but within the keep-alive): both are answered."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(READ_TIMEOUT * 1.5)
    finally:
        writer.close()


async def test_a_request_the_parser_refuses_is_a_400_problem(server: Server) -> None:
    """A NUL in a header (here the Idempotency-Key) never reaches the app: the HTTP parser
    refuses it, and the answer is problem+json like every other."""
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: api\r\nIdempotency-Key: a\x00b\r\n\r\n"
    answer, _ = await drip(server, head, b"")
    assert problem_of(answer, 400)["type"] == "/problems/malformed-request"
