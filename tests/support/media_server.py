"""A media host for download tests: a raw ASGI app whose every misbehaviour is a path.

Served for real on loopback with ``servers.serve_app``:

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

``requests`` lists the paths asked for, so a test can see that nothing was fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PIECE = 64 * 1024


def body_bytes(n: int) -> bytes:
    """The deterministic body /media/{n} and /chunked/{n} send."""
    pattern = bytes(range(256))
    return (pattern * (n // 256 + 1))[:n]


class MediaHost:
    def __init__(self) -> None:
        self.requests: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope["path"]
        self.requests.append(path)
        query = parse_qs(scope.get("query_string", b"").decode())
        parts = path.strip("/").split("/")
        head, arg = parts[0], parts[1] if len(parts) > 1 else ""

        if head == "media":
            body = body_bytes(int(arg))
            await _start(send, 200, {"content-length": str(len(body))})
            await _pieces(send, body)
        elif head == "chunked":
            await _start(send, 200, {})
            await _pieces(send, body_bytes(int(arg)))
        elif head == "huge":
            await _start(send, 200, {"content-length": str(10 * 1024**3)})
            await _until_disconnect(receive)
        elif head == "short":
            await _start(send, 200, {"content-length": arg})
            await send({"type": "http.response.body", "body": body_bytes(int(arg) // 2)})
        elif head == "stall":
            await _start(send, 200, {"content-length": "1000000"})
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            await _until_disconnect(receive)
        elif head == "drip":
            piece, every = int(query["piece"][0]), float(query["every"][0])
            await _start(send, 200, {"content-length": arg})
            await _drip(receive, send, body_bytes(int(arg)), piece, every)
        elif head == "status":
            await _start(send, int(arg), {"content-length": "5"})
            await send({"type": "http.response.body", "body": b"nope\n"})
        elif head == "hop":
            k = int(arg)
            if k > 0:
                location = f"/hop/{k - 1}"
            else:
                host = dict(scope["headers"])[b"host"].decode()
                location = f"http://{host}/media/1000"
            await _redirect(send, location)
        elif head == "to":
            await _redirect(send, query["url"][0])
        elif head == "loop":
            await _redirect(send, "/loop")
        elif head == "no-location":
            await _start(send, 302, {"content-length": "0"})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _start(send, 404, {"content-length": "0"})
            await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _drip(receive: Receive, send: Send, body: bytes, piece: int, every: float) -> None:
    for start in range(0, len(body), piece):
        end = start + piece
        await send({"type": "http.response.body", "body": body[start:end], "more_body": True})
        if end >= len(body):
            break
        try:
            if (await asyncio.wait_for(receive(), every))["type"] == "http.disconnect":
                return
        except TimeoutError:
            pass
    await send({"type": "http.response.body", "body": b""})


async def _start(send: Send, status: int, headers: dict[str, str]) -> None:
    headers = {"content-type": "audio/mpeg", **headers}
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )


async def _pieces(send: Send, body: bytes) -> None:
    for start in range(0, len(body), PIECE):
        await send(
            {"type": "http.response.body", "body": body[start : start + PIECE], "more_body": True}
        )
    await send({"type": "http.response.body", "body": b""})


async def _redirect(send: Send, location: str) -> None:
    await _start(send, 302, {"location": location, "content-length": "0"})
    await send({"type": "http.response.body", "body": b""})
