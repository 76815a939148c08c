"""The whole service for end-to-end tests: real processes and servers on loopback.

* the model server runs once per test session as a real process (``transcription serve
  model-server``) with the bundled tiny.en model;
* per test, the enqueue API, the orchestrator and the transcriber run in this process
  on real HTTP, against the test's own database;
* a media server serves files (and can answer with any status or stall), a webhook
  receiver records deliveries (and can fail on demand), and a model-server proxy counts
  chunk requests and can fail some or be "down".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from enqueue_service.app import create_app as create_enqueue
from enqueue_service.settings import EnqueueSettings
from orchestrator_service.app import create_app as create_orchestrator
from orchestrator_service.settings import OrchestratorSettings
from servers import serve_app, wait_for
from transcriber_service.app import create_app as create_transcriber
from transcriber_service.settings import TranscriberSettings
from transcription_core import repository as repo
from transcription_core.db import create_engine

DATA = Path(__file__).parent / "data"
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    cleaned = "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text)
    return cleaned.split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def model_server_process(**env: str) -> Any:
    """A real model server process; yields its base URL once it is ready."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transcription_cli",
            "serve",
            "model-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the model server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the model server did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- peers --------------------------------------------------------------------------------


@dataclass
class MediaServer:
    """Serves ``tests/data`` files at ``/media/{name}``; ``behaviour[name]`` overrides."""

    url: str = ""
    behaviour: dict[str, int | str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/media/{name}")
        async def media(name: str) -> Response:
            self.requests.append(name)
            action = self.behaviour.get(name)
            if isinstance(action, int):
                return Response(status_code=action)
            if action == "stall":
                await asyncio.sleep(3600)
            path = DATA / name
            if not path.is_file():
                return Response(status_code=404)
            return Response(path.read_bytes(), media_type="application/octet-stream")

        return app

    def media_url(self, name: str) -> str:
        return f"{self.url}/media/{name}"


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class WebhookReceiver:
    """Records every delivery; answers each with the next of ``answers`` (then 200)."""

    url: str = ""
    answers: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            answer = self.answers.pop(0) if self.answers else 200
            status, headers = answer if isinstance(answer, tuple) else (answer, {})
            self.deliveries.append(Delivery(dict(request.headers), await request.body(), status))
            return Response(status_code=status, headers=headers)

        return app

    @property
    def delivered(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.status < 300]


@dataclass
class ModelProxy:
    """Forwards to the real model server, counting chunk requests.

    ``fail_next`` requests answer 500 first; while ``down`` every request answers 503;
    ``down_after`` N forwarded requests, it goes down by itself.
    """

    target: str
    url: str = ""
    fail_next: int = 0
    down: bool = False
    down_after: int | None = None
    forwarded: int = 0
    refused: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def proxy(path: str, request: Request) -> Response:
            if self.down_after is not None and self.forwarded >= self.down_after:
                self.down, self.down_after = True, None
            if path.startswith("v1/") and (self.down or self.fail_next > 0):
                self.refused += 1
                if not self.down:
                    self.fail_next -= 1
                return Response(
                    status_code=503 if self.down else 500,
                    headers={"Retry-After": "0"} if self.down else {},
                )
            async with httpx.AsyncClient(timeout=120) as client:
                upstream = await client.request(
                    request.method,
                    f"{self.target}/{path}",
                    params=request.query_params,
                    content=await request.body(),
                    headers={
                        k: v for k, v in request.headers.items() if k.lower() in ("content-type",)
                    },
                )
            if path.startswith("v1/"):
                self.forwarded += 1
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )

        return app


# --- the service --------------------------------------------------------------------------


@dataclass
class Stack:
    database_url: str
    api: httpx.AsyncClient
    api_key: str
    webhook_secret: str
    media: MediaServer
    receiver: WebhookReceiver
    model: ModelProxy
    engine: Any

    async def enqueue(self, media_name: str, **extra: Any) -> dict[str, Any]:
        body = {
            "media_url": self.media.media_url(media_name),
            "webhook_url": f"{self.receiver.url}/hook",
            **extra,
        }
        response = await self.api.post(
            "/v1/jobs", json=body, headers={"Authorization": f"Bearer {self.api_key}"}
        )
        assert response.status_code == 202, response.text
        return response.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.api.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_status(self, job_id: str, *statuses: str, timeout: float = 120) -> dict:
        async def check() -> dict[str, Any] | None:
            job = await self.job(job_id)
            return job if job["status"] in statuses else None

        return await wait_for(check, timeout=timeout, interval=0.1)

    async def events(self, job_id: str) -> list[Any]:
        async with self.engine.connect() as conn:
            return await repo.job_events(conn, job_id)


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str,
    model_server_url: str,
    *,
    transcriber: dict[str, Any] | None = None,
    orchestrator: dict[str, Any] | None = None,
    tweak: Callable[[Stack], None] | None = None,
) -> AsyncIterator[Stack]:
    """Enqueue API, orchestrator and transcriber on loopback, with the test peers."""
    common: dict[str, Any] = {
        "database_url": database_url,
        "allow_private_urls": True,
        "retry_backoff_seconds": 0.05,
        "webhook_retry_schedule": "0.05,0.05,0.05,0.05",
    }
    engine = create_engine(database_url, "e2e")
    async with engine.begin() as conn:
        tenant = await repo.create_tenant(conn, "org-e2e")
    media, receiver, proxy = MediaServer(), WebhookReceiver(), ModelProxy(model_server_url)
    async with contextlib.AsyncExitStack() as stack:
        media.url = await stack.enter_async_context(serve_app(media.app()))
        receiver.url = await stack.enter_async_context(serve_app(receiver.app()))
        proxy.url = await stack.enter_async_context(serve_app(proxy.app()))
        transcriber_settings = TranscriberSettings(
            **{
                **common,
                "model_server_url": proxy.url,
                "lease_seconds": 30,
                "model_request_attempts": 3,
                **(transcriber or {}),
            }
        )
        transcriber_url = await stack.enter_async_context(
            serve_app(create_transcriber(transcriber_settings))
        )
        orchestrator_settings = OrchestratorSettings(
            **{
                **{k: v for k, v in common.items() if k != "allow_private_urls"},
                "transcriber_url": transcriber_url,
                "poll_interval_seconds": 0.1,
                "lease_seconds": 30,
                **(orchestrator or {}),
            }
        )
        await stack.enter_async_context(serve_app(create_orchestrator(orchestrator_settings)))
        enqueue_url = await stack.enter_async_context(
            serve_app(
                create_enqueue(EnqueueSettings(database_url=database_url, allow_private_urls=True))
            )
        )
        api = await stack.enter_async_context(httpx.AsyncClient(base_url=enqueue_url, timeout=30))
        yield Stack(
            database_url, api, tenant.api_key, tenant.webhook_secret, media, receiver, proxy, engine
        )
    await engine.dispose()
