"""Bounds on how a request arrives, for a service that faces clients directly.

uvicorn with httptools bounds neither the time a client takes to send a request nor the
size of its head: a client that sends its headers or body a byte at a time holds the
connection and a task for as long as it likes (``timeout_keep_alive`` only runs between
requests), and 200 MB of headers were read into memory. :class:`BoundedHttpTools` adds
both bounds to uvicorn's own protocol:

* each request must arrive whole (request line, headers and body) within
  ``read_timeout`` seconds of its first byte, or of the connection for the first request:
  otherwise 408 and the connection is closed (the app, if it was reading the body, sees
  the client disconnect);
* a head (request line and headers) over ``max_head_bytes`` is 431, and the connection
  is closed.

These answers, and uvicorn's 400 for a request httptools cannot parse (a NUL in a
header), are problem+json. A reverse proxy in front (Knative's ingress and
queue-proxy, or nginx) bounds these too; this is the bound that holds without one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}
_TYPES = {
    400: "/problems/malformed-request",
    408: "/problems/request-timeout",
    431: "/problems/headers-too-large",
}


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit on each request.

    A service sets the bounds in a subclass of its own, defined at module level (uvicorn
    pickles the protocol class into each worker process), from its settings.
    """

    read_timeout: float = 30.0
    max_head_bytes: int = 65_536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = 0  # None while a body (or nothing) is being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > self.max_head_bytes:
            self._refuse(431, f"the request head is over {self.max_head_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, as problem+json."""
        self._refuse(400, msg)

    # httptools parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a request on a kept-alive connection
            self._start_deadline()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_deadline()
        self._head_bytes = 0  # the next request's head, if any, comes next
        super().on_message_complete()

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self._refuse(408, f"the request did not arrive whole within {self.read_timeout:g} s")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` unless a response is under way, then close the connection."""
        self._stop_deadline()
        if self.transport.is_closing():
            return
        cycle = self.cycle  # while a head is read, the previous request's (or None)
        if self._head_bytes is not None or cycle is None or not cycle.response_started:
            reason = _REASONS[status]
            body = json.dumps(
                {
                    "type": _TYPES[status],
                    "title": reason.decode(),
                    "status": status,
                    "detail": detail,
                }
            ).encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\n" % (status, reason)
                + b"content-type: application/problem+json\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
        self.logger.warning("%s: closing the connection", detail)
        self.transport.close()
