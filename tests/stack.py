"""The whole service for end-to-end tests, in this process, with the kit's peers.

* the model server runs as a real process (``testkit.procs.model_server``), started by
  the tests that need one (or none: a test that never transcribes gives any URL);
* per test, the enqueue API, the orchestrator and the transcriber run in this process
  on real HTTP (``testkit.asgi.serve_app``), against the test's own database;
* the peers of ``testkit``: a media server (each job's URL can carry a fault: a status,
  a stall, a reset), a webhook receiver (records and verifies deliveries, answers as
  told) and a model-server proxy (counts chunk requests, fails some, or is unavailable).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook

from enqueue_service.app import create_app as create_enqueue
from enqueue_service.settings import EnqueueSettings
from orchestrator_service.app import create_app as create_orchestrator
from orchestrator_service.settings import OrchestratorSettings
from testkit.asgi import serve_app, wait_for
from testkit.data import DATA
from testkit.media_server import MediaServer
from testkit.model_proxy import ModelProxy
from testkit.webhook_receiver import WebhookReceiver
from transcriber_service.app import create_app as create_transcriber
from transcriber_service.settings import TranscriberSettings
from transcription_core import repository as repo
from transcription_core.db import create_engine

# --- the service --------------------------------------------------------------------------


TENANT = "org-e2e"


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

    async def enqueue(self, media_name: str, *, media: str = "ok", **extra: Any) -> dict[str, Any]:
        """POST a job for the file ``media_name``, served with the media server's
        behaviour ``media`` (``stall``, ``status404``, ...)."""
        body = {
            "media_url": self.media.media_url(uuid.uuid4().hex[:8], media, media_name),
            "webhook_url": self.receiver.hook_url(TENANT),
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
    enqueue: dict[str, Any] | None = None,
    media_root: Path = DATA,
) -> AsyncIterator[Stack]:
    """Enqueue API, orchestrator and transcriber on loopback, with the test peers; the
    media server serves the files of ``media_root``."""
    common: dict[str, Any] = {
        "database_url": database_url,
        "allow_private_urls": True,
        "retry_backoff_seconds": 0.05,
        "webhook_retry_schedule": "0.05,0.05,0.05,0.05",
    }
    engine = create_engine(database_url, "e2e")
    async with engine.begin() as conn:
        tenant = await repo.create_tenant(conn, TENANT)
    media = MediaServer(media_root)
    receiver = WebhookReceiver(secrets={TENANT: tenant.webhook_secret})
    proxy = ModelProxy(model_server_url)
    async with contextlib.AsyncExitStack() as stack:
        for peer in (media, receiver, proxy):
            await stack.enter_async_context(peer)
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
                create_enqueue(
                    EnqueueSettings(
                        database_url=database_url, allow_private_urls=True, **(enqueue or {})
                    )
                )
            )
        )
        api = await stack.enter_async_context(httpx.AsyncClient(base_url=enqueue_url, timeout=30))
        yield Stack(
            database_url, api, tenant.api_key, tenant.webhook_secret, media, receiver, proxy, engine
        )
    await engine.dispose()


async def run_job(stack: Stack, media: str, **options: Any) -> tuple[dict, dict]:
    """The finished job (it must succeed), and the data of its verified webhook; each of
    ``options`` is echoed by the enqueue's answer, the job resource and the webhook."""
    job = await stack.enqueue(media, **options)
    done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED", timeout=300)
    assert done["status"] == "SUCCEEDED", done
    delivery = next(d for d in stack.receiver.deliveries if job["id"].encode() in d.body)
    payload = Webhook(stack.webhook_secret).verify(delivery.body, delivery.headers)
    for name, value in options.items():
        assert job[name] == done[name] == payload["data"][name] == value, name
    return done, payload["data"]
