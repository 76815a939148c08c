"""The whole service as real processes on loopback, for ``long_media.py``, ``sustained.py``
and ``memory.py``.

* the four services as their own processes (``transcription serve <name>``, what a
  container runs) on a scratch PostgreSQL database (``benchlib.scratch_database``);
* a media server and a webhook receiver in a thread of the benchmark's process (their own
  event loop, so the benchmark's own work does not delay them): the media server streams
  files from one folder and notes when each request started and ended; the receiver
  answers 200 to every delivery and records it (arrival time, ``webhook-id``, whether the
  Standard Webhooks signature verifies, the job's id and status from the body);
* Prometheus metrics of a service read back as ``{"name{labels}": value}``.

Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

SERVICES = ("model-server", "transcriber", "orchestrator", "enqueue")
TENANT = "org-bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> str:
    """``/proc/loadavg``'s 1, 5 and 15 minute load averages (others share this machine)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the peers: media server and webhook receiver ---------------------------------------


@dataclass
class MediaRequest:
    name: str
    started: float  # time.time()
    ended: float | None = None
    num_bytes: int = 0


@dataclass
class Received:
    """One webhook delivery as the receiver saw it."""

    at_monotonic: float
    at: float  # time.time()
    webhook_id: str
    signature_ok: bool
    job_id: str | None
    event: str | None
    status: str | None
    body_bytes: int


class _MediaApp:
    """``GET /media/<name>``: the file from ``root``, streamed in 1 MiB pieces."""

    def __init__(self, root: Path, requests: list[MediaRequest]) -> None:
        self.root = root
        self.requests = requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        name = scope["path"].removeprefix("/media/")
        path = self.root / name
        if "/" in name or not path.is_file():
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        record = MediaRequest(name, time.time())
        self.requests.append(record)
        size = path.stat().st_size
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
        with path.open("rb") as media:
            while True:
                piece = media.read(1 << 20)
                more = len(piece) == 1 << 20
                await send({"type": "http.response.body", "body": piece, "more_body": more})
                record.num_bytes += len(piece)
                if not more:
                    break
        record.ended = time.time()


class _HookApp:
    """``POST /hook``: 200, and a :class:`Received` per delivery."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        now_mono, now = time.monotonic(), time.time()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        webhook_id = headers.get("webhook-id", "")
        job_id = event = status = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            payload = json.loads(body)
            event = payload["type"]
            job_id = payload["data"]["id"]
            status = payload["data"]["status"]
        self.peers.received.append(
            Received(
                now_mono,
                now,
                webhook_id,
                self.peers.verify(headers, body),
                job_id,
                event,
                status,
                len(body),
            )
        )
        if job_id is not None and job_id in self.peers.bodies_wanted:
            self.peers.bodies[job_id] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@dataclass
class Peers:
    """The media server and the webhook receiver, on loopback, in a thread of their own."""

    media_root: Path
    webhook_secret: str = ""
    media_url: str = ""
    hook_url: str = ""
    media_requests: list[MediaRequest] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    #: Job ids whose webhook bodies are kept in ``bodies`` (the transcript is in them).
    bodies_wanted: set[str] = field(default_factory=set)
    bodies: dict[str, bytes] = field(default_factory=dict)
    _servers: list[uvicorn.Server] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            key = base64.b64decode(self.webhook_secret.removeprefix("whsec_"))
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        except (KeyError, ValueError):
            return False
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        offered = [s.removeprefix("v1,") for s in headers.get("webhook-signature", "").split()]
        return any(hmac.compare_digest(expected, s) for s in offered)

    def start(self) -> None:
        media_port, hook_port = benchlib.free_port(), benchlib.free_port()
        for app, port in (
            (_MediaApp(self.media_root, self.media_requests), media_port),
            (_HookApp(self), hook_port),
        ):
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_keep_alive=30,
                backlog=4096,
            )
            self._servers.append(uvicorn.Server(config))

        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers))

        self._thread = threading.Thread(target=lambda: asyncio.run(serve_all()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not all(s.started for s in self._servers):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the media server or webhook receiver did not start")
            time.sleep(0.02)
        self.media_url = f"http://127.0.0.1:{media_port}/media"
        self.hook_url = f"http://127.0.0.1:{hook_port}/hook"

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)


# --- the services ------------------------------------------------------------------------


@dataclass
class Services:
    servers: dict[str, benchlib.Server]
    database_url: str
    api_url: str
    api_key: str
    webhook_secret: str
    env: dict[str, dict[str, str]]

    def pid(self, name: str) -> int:
        return self.servers[name].proc.pid

    def stop(self) -> None:
        for name in reversed(SERVICES):
            if name in self.servers:
                self.servers[name].stop()


def base_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)  # PYTHONPATH included: see "a snapshot" in bench/README.md
    env.update(
        {
            "DATABASE_URL": database_url,
            "ALLOW_PRIVATE_URLS": "true",
            "LOG_LEVEL": "WARNING",
            "PATH": f"{benchlib.BIN}:{env.get('PATH', '')}",
        }
    )
    return env


@contextlib.contextmanager
def running_services(
    database_url: str,
    settings: dict[str, dict[str, str]],
    log_dir: Path,
    tenant: str = TENANT,
) -> Iterator[Services]:
    """The four services as processes; ``settings[name]`` adds environment variables.

    The model server is started first and waited for until ``/readyz`` (model loaded).
    A tenant is created with ``transcription tenants create --json``.
    """
    common = base_env(database_url)
    created = subprocess.run(
        [str(benchlib.BIN / "transcription"), "tenants", "create", tenant, "--json"],
        env=common,
        capture_output=True,
        text=True,
        check=True,
    )
    credentials = json.loads(created.stdout)
    ports = {name: benchlib.free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env: dict[str, dict[str, str]] = {}
    servers: dict[str, benchlib.Server] = {}
    services = Services(
        servers,
        database_url,
        urls["enqueue"],
        credentials["api_key"],
        credentials["webhook_secret"],
        env,
    )
    try:
        for name in SERVICES:
            env[name] = {
                **common,
                "MODEL_SERVER_URL": urls["model-server"],
                "TRANSCRIBER_URL": urls["transcriber"],
                **settings.get(name, {}),
            }
            command = [
                str(benchlib.BIN / "transcription"),
                "serve",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[name]),
            ]
            servers[name] = benchlib.start_server(
                command, env[name], ports[name], log_dir / f"{name}.log", timeout=120
            )
            if name == "model-server":
                _wait_ready(urls[name] + "/readyz", 180)
        yield services
    finally:
        services.stop()


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout} s")


def metrics(url: str) -> dict[str, float]:
    """A service's ``/metrics`` as ``{"name{label=value,...}": value}``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 4) for k, v in after.items()}


def model_server_summary(delta: dict[str, float]) -> dict[str, Any]:
    """Batches, chunks, mean batch size, audio and compute seconds from a metrics delta."""
    batches = delta.get("transcription_model_batch_size_count", 0.0)
    chunks = delta.get("transcription_model_batch_size_sum", 0.0)
    audio = delta.get("transcription_model_audio_seconds_total", 0.0)
    compute = delta.get("transcription_model_compute_seconds_total", 0.0)
    sizes = {
        k.split("le=")[1].rstrip("}"): v
        for k, v in delta.items()
        if k.startswith("transcription_model_batch_size_bucket")
    }
    return {
        "batches": int(batches),
        "chunks": int(chunks),
        "mean_batch_size": round(chunks / batches, 2) if batches else None,
        "batch_size_cumulative_buckets": sizes,
        "audio_seconds": round(audio, 1),
        "compute_seconds": round(compute, 2),
        "audio_seconds_per_compute_second": round(audio / compute, 1) if compute else None,
        "rejected_chunks": int(delta.get("transcription_model_rejected_chunks_total", 0.0)),
    }


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
    return response.json()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` / ``VmHWM`` / ... of a process, in KiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> None:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def code_info() -> dict[str, Any]:
    """Which service code ran: the working tree, or a snapshot put first on PYTHONPATH."""
    import transcription_core

    where = Path(transcription_core.__file__).resolve().parents[2]
    commit_file = where / "COMMIT"
    return {
        "service_code": str(where),
        "snapshot_commit": commit_file.read_text().strip() if commit_file.is_file() else None,
    }
