"""In front of the real model server: forwards, counts, and fails on cue.

``/v1/`` requests (the chunks) can be failed; anything else (health, readiness) is always
forwarded. In this order, per ``/v1/`` request:

* ``unavailable_after`` N forwarded requests, it becomes ``unavailable`` by itself;
* while ``unavailable``: 503 with ``Retry-After: 0`` (the model tier is down but its
  address answers);
* ``fail_next`` requests answer 500 first;
* ``delay_seconds`` holds each request that long (a slower model);
* ``fail_ratio`` of them get a 500 or a 503 (with ``Retry-After: 1``), at random (seeded);
* the rest are forwarded.

``counts`` says what it did ("forwarded", "answered 500", "answered 503", "upstream
error"), ``queries`` holds the query string of every ``/v1/`` request forwarded, in order;
``stop()`` takes it down altogether (connections refused).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx

from testkit.rawhttp import HttpServer, Request, write_response

INJECTED = b'{"detail":"injected"}'


class ModelProxy(HttpServer):
    def __init__(self, target: str, seed: int = 7) -> None:
        super().__init__()
        self.target = target.rstrip("/")
        self.fail_ratio = 0.0
        self.delay_seconds = 0.0
        self.fail_next = 0
        self.unavailable = False
        self.unavailable_after: int | None = None
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.queries: list[str] = []
        self._http: httpx.AsyncClient | None = None

    @property
    def forwarded(self) -> int:
        return self.counts["forwarded"]

    @property
    def refused(self) -> int:
        """The ``/v1/`` requests answered 500 or 503 instead of being forwarded."""
        return self.counts["answered 500"] + self.counts["answered 503"]

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
        if request.path.startswith("/v1/"):
            refusal = await self._refusal()
            if refusal is not None:
                status, headers = refusal
                self.counts[f"answered {status}"] += 1
                await write_response(writer, status, INJECTED, headers)
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
            self.queries.append(request.query)
        await write_response(
            writer,
            upstream.status_code,
            upstream.content,
            {"content-type": upstream.headers.get("content-type", "application/json")},
        )
        return True

    async def _refusal(self) -> tuple[int, dict[str, str]] | None:
        """What to answer instead of forwarding, if anything."""
        if self.unavailable_after is not None and self.forwarded >= self.unavailable_after:
            self.unavailable, self.unavailable_after = True, None
        if self.unavailable:
            return 503, {"retry-after": "0"}
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, {}
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.rng.random() < self.fail_ratio:
            if self.rng.random() < 0.5:
                return 500, {}
            return 503, {"retry-after": "1"}
        return None
