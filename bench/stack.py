"""The whole service as real processes on loopback, for the benchmarks that run jobs.

* :func:`running_services`: the four services as their own processes (``transcription
  serve <name>``, what a container runs; ``testkit.procs``) on a scratch PostgreSQL
  database (``bench.database``), with a tenant of their own;
* :class:`Peers`: the kit's media server (``testkit.media_server``: files of one folder,
  each request logged with when it started and ended) and webhook receiver
  (``testkit.webhook_receiver``: each delivery with its arrival, signature check, job and
  body), in a thread of their own, so the benchmark's own work does not delay them;
* a service's Prometheus metrics read back as ``{"name{labels}": value}``, a job's
  timeline from its events.

Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

# Re-exported: the scenarios read metrics as stack.metrics(...).
from bench.metrics import metrics as metrics
from bench.metrics import metrics_delta as metrics_delta
from bench.metrics import model_server_summary as model_server_summary
from testkit.media_server import MediaServer
from testkit.ports import free_port
from testkit.procs import Processes, Service, transcription_argv
from testkit.rawhttp import HttpServer, InThread
from testkit.webhook_receiver import Delivery, WebhookReceiver
from transcription_core.db import asyncpg_dsn

SERVICES = ("model-server", "transcriber", "orchestrator", "enqueue")
TENANT = "org-bench"


@dataclass
class Services:
    servers: dict[str, Service]
    database_url: str
    api_url: str
    tenant: str
    api_key: str
    webhook_secret: str
    env: dict[str, dict[str, str]]

    def pid(self, name: str) -> int:
        return self.servers[name].pid

    def url(self, name: str) -> str:
        return self.servers[name].url


class Peers(InThread):
    """The media server (the files of ``media_root``) and the webhook receiver, in a thread
    of their own: ``with Peers(folder) as peers:``; ``extra`` servers (a stand-in model
    server) run in that thread too."""

    def __init__(self, media_root: Path, *extra: HttpServer) -> None:
        self.media = MediaServer(media_root)
        self.receiver = WebhookReceiver()
        super().__init__(self.media, self.receiver, *extra)

    def media_url(self, name: str) -> str:
        return self.media.media_url("bench", "ok", name)

    def hook_url(self, services: Services) -> str:
        """The receiver's URL for the tenant of ``services``, whose signatures it checks."""
        self.receiver.secrets[services.tenant] = services.webhook_secret
        return self.receiver.hook_url(services.tenant)

    def __enter__(self) -> Peers:
        self.start()
        return self


def base_env(database_url: str) -> dict[str, str]:
    """Added to this process's environment (PYTHONPATH included: see "a snapshot" in
    bench/README.md)."""
    return {
        "DATABASE_URL": database_url,
        "ALLOW_PRIVATE_URLS": "true",
        "LOG_LEVEL": "WARNING",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def create_tenant(database_url: str, tenant: str) -> dict[str, str]:
    """``transcription tenants create TENANT --json``: its API key and webhook secret."""
    created = subprocess.run(
        [*transcription_argv(), "tenants", "create", tenant, "--json"],
        env={**os.environ, **base_env(database_url)},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(created.stdout))


@contextlib.contextmanager
def running_services(
    database_url: str,
    settings: dict[str, dict[str, str]],
    log_dir: Path,
    tenant: str = TENANT,
    model_server_url: str | None = None,
) -> Iterator[Services]:
    """The four services as processes; ``settings[name]`` adds environment variables.

    The model server is started first and waited for until ``/readyz`` (model loaded);
    with ``model_server_url`` (a stand-in) it is not started and the transcriber is sent
    there instead.
    """
    credentials = create_tenant(database_url, tenant)
    names = [n for n in SERVICES if not (model_server_url and n == "model-server")]
    ports = {name: free_port() for name in names}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    if model_server_url:
        urls["model-server"] = model_server_url
    env: dict[str, dict[str, str]] = {}
    procs = Processes()
    servers: dict[str, Service] = {}
    try:
        for name in names:
            env[name] = {
                **base_env(database_url),
                "MODEL_SERVER_URL": urls["model-server"],
                "TRANSCRIBER_URL": urls["transcriber"],
                **settings.get(name, {}),
            }
            server = procs.add(Service(name, name, ports[name], env[name], log_dir / f"{name}.log"))
            server.start()
            server.wait_ready_blocking(120)
            if name == "model-server":
                server.wait_ready_blocking(180, path="/readyz")
            servers[name] = server
        yield Services(
            servers,
            database_url,
            urls["enqueue"],
            tenant,
            credentials["api_key"],
            credentials["webhook_secret"],
            env,
        )
    finally:
        for name in reversed(SERVICES):
            if name in servers:
                servers[name].stop(grace=15)
        procs.close()


async def enqueue(
    client: httpx.AsyncClient, services: Services, media_url: str, hook_url: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        services.api_url + "/v1/jobs",
        json={"media_url": media_url, "webhook_url": hook_url, **extra},
        headers={"Authorization": f"Bearer {services.api_key}"},
    )
    if response.status_code != 202:
        raise RuntimeError(f"enqueue answered {response.status_code}: {response.text[:300]}")
    return dict(response.json())


@dataclass
class OneJob:
    job: dict[str, Any]  # as the enqueue answered
    delivery: Delivery  # its first webhook
    final: dict[str, Any]  # GET /v1/jobs/{id} once it left QUEUED/TRIGGERED/PROCESSING
    posted: float  # time.time() of the POST
    wall_seconds: float  # from the POST to the delivery's arrival (monotonic)


async def run_one(
    client: httpx.AsyncClient,
    services: Services,
    peers: Peers,
    media_name: str,
    timeout: float,
    **extra: Any,
) -> OneJob:
    """One job for ``media_name`` through the service: POST, its webhook, its end."""
    received = peers.receiver.deliveries
    received_before = len(received)
    posted = time.time()
    started = time.monotonic()
    job = await enqueue(
        client, services, peers.media_url(media_name), peers.hook_url(services), **extra
    )
    while not any(r.job_id == job["id"] for r in received[received_before:]):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{media_name}: no webhook within {timeout} s")
        await asyncio.sleep(0.02)
    delivery = next(r for r in received[received_before:] if r.job_id == job["id"])
    while True:  # the final status is written just after the receiver's answer
        final = (
            await client.get(
                f"{services.api_url}/v1/jobs/{job['id']}",
                headers={"Authorization": f"Bearer {services.api_key}"},
            )
        ).json()
        if final["status"] not in ("QUEUED", "TRIGGERED", "PROCESSING"):
            break
        await asyncio.sleep(0.05)
    return OneJob(job, delivery, final, posted, delivery.at_monotonic - started)


async def job_timeline(database_url: str, job_id: str) -> dict[str, float]:
    """Unix times of the job's status changes and of its first and last saved chunk."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        events = await conn.fetch(
            "SELECT to_status, created_at FROM job_events WHERE job_id = $1 ORDER BY id", job_id
        )
        chunks = await conn.fetch(
            'SELECT "index", created_at FROM job_chunks WHERE job_id = $1 ORDER BY created_at',
            job_id,
        )
    finally:
        await conn.close()
    out: dict[str, float] = {}
    for row in events:
        out.setdefault(row["to_status"], row["created_at"].timestamp())
    if chunks:
        out["first_chunk_saved"] = chunks[0]["created_at"].timestamp()
        out["last_chunk_saved"] = chunks[-1]["created_at"].timestamp()
        out["chunks"] = len(chunks)
    return out
