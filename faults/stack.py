"""One drill's whole service: a fresh database, the four services as processes, the peers,
and a stream of jobs sent the way a careful client sends them.

    model server (shared by the run) <- ModelProxy <- transcriber replicas <- LoadBalancer
                                                                  ^               ^
    JobStream -> enqueue replica(s) -> PostgreSQL <- orchestrator(s) -------------'
    MediaServer <- transcribers -> WebhookReceiver

Short timings come from :data:`BASE_ENV` (a 3 s lease, sub-second backoffs, a webhook
schedule of seconds); a drill overrides what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from faults.db import TenantKeys, dsn
from testkit.balancer import LoadBalancer
from testkit.media_server import MediaServer
from testkit.model_proxy import ModelProxy
from testkit.ports import free_port
from testkit.procs import Processes, Service
from testkit.webhook_receiver import WebhookReceiver

BASE_ENV = {
    "ALLOW_PRIVATE_URLS": "true",
    "DATABASE_POOL_SIZE": "5",
    "LEASE_SECONDS": "3",
    "RETRY_BACKOFF_SECONDS": "0.2",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,2,2,5,5,10",
    "POLL_INTERVAL_SECONDS": "0.5",
    "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "4",
    "WORKER_MAX_JOBS": "4",
    "MAX_ATTEMPTS": "5",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "DOWNLOAD_CONNECT_TIMEOUT_SECONDS": "3",
    "DOWNLOAD_READ_TIMEOUT_SECONDS": "5",
    "TRIGGER_TIMEOUT_SECONDS": "5",
    "MODEL_REQUEST_TIMEOUT_SECONDS": "120",
    "WEBHOOK_TIMEOUT_SECONDS": "5",
    "LOG_LEVEL": "INFO",
}

TERMINAL = ("SUCCEEDED", "PERMAFAILED", "CANCELED")


@dataclass
class JobSpec:
    """One logical job of the stream, and what it must end as."""

    key: str
    tenant: str
    file: str
    behaviour: str = "ok"
    expect_status: str = "SUCCEEDED"
    expect_reason: str | None = None
    #: The webhook receiver's behaviour for this job (``WebhookReceiver``): ``ok`` or a
    #: hostile one; a job whose receiver never answers cannot have its message delivered.
    webhook: str = "ok"


@dataclass
class Submission:
    spec: JobSpec
    job_id: str | None = None
    answers: list[str] = field(default_factory=list)
    accepted_at: float | None = None


def plan_jobs(
    count: int,
    tenants: list[TenantKeys],
    *,
    prefix: str = "job",
    jfk_every: int = 3,
    behaviours: dict[int, tuple[str, str, str | None]] | None = None,
) -> list[JobSpec]:
    """``count`` jobs alternating tenants; every ``jfk_every``-th is jfk.flac (11 s), the
    rest hotwords.mp3 (4 s). ``behaviours[i] = (behaviour, status, reason)`` sets job i's
    media fault and expected end."""
    specs = []
    run = uuid.uuid4().hex[:6]
    for i in range(count):
        behaviour, status, reason = (behaviours or {}).get(i, ("ok", "SUCCEEDED", None))
        specs.append(
            JobSpec(
                key=f"{prefix}-{run}-{i:03d}",
                tenant=tenants[i % len(tenants)].tenant,
                file="jfk.flac" if jfk_every and i % jfk_every == 0 else "hotwords.mp3",
                behaviour=behaviour,
                expect_status=status,
                expect_reason=reason,
            )
        )
    return specs


class Stack:
    def __init__(
        self,
        *,
        name: str,
        database_url: str,
        tenants: list[TenantKeys],
        model_server_url: str,
        workdir: Path,
        transcribers: int = 2,
        orchestrators: int = 1,
        enqueues: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.tenants = {t.tenant: t for t in tenants}
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.media = MediaServer()
        self.receiver = WebhookReceiver(
            secrets={t.tenant: t.webhook_secret for t in tenants},
            log_path=workdir / "webhooks.jsonl",
        )
        self.model = ModelProxy(model_server_url)
        self.lb = LoadBalancer([])
        self.env = {
            **BASE_ENV,
            "DATABASE_URL": database_url,
            "TRANSCRIBER_URL": self.lb.url,
            "MODEL_SERVER_URL": self.model.url,
            **(env or {}),
        }
        self.procs = Processes()
        self.transcribers = [
            self._service(f"transcriber-{i + 1}", "transcriber") for i in range(transcribers)
        ]
        self.lb.backends = [t.url for t in self.transcribers]
        self.orchestrators = [
            self._service(f"orchestrator-{i + 1}", "orchestrator") for i in range(orchestrators)
        ]
        self.enqueues = [self._service(f"enqueue-{i + 1}", "enqueue") for i in range(enqueues)]
        self.http: httpx.AsyncClient | None = None
        self.submissions: list[Submission] = []
        self._rr = 0

    def _service(self, name: str, service: str) -> Service:
        return self.procs.add(
            Service(name, service, free_port(), self.env, self.workdir / f"{name}.log")
        )

    def add_orchestrator(self) -> Service:
        service = self._service(f"orchestrator-{len(self.orchestrators) + 1}", "orchestrator")
        self.orchestrators.append(service)
        return service

    async def start(self) -> None:
        for peer in (self.media, self.receiver, self.model):
            await peer.start()
        await self.lb.start()
        for service in self.procs.services:
            service.start()
        await asyncio.gather(*(s.wait_ready() for s in self.procs.services))
        self.lb.backends = [t.url for t in self.transcribers]  # a port may have changed
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(15, connect=3))

    async def close(self) -> None:
        try:
            self.procs.close()
        finally:
            if self.http is not None:
                await self.http.aclose()
            await self.lb.stop()
            for peer in (self.media, self.receiver):
                await peer.stop()
            await self.model.close()

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def restart(self, service: Service) -> None:
        service.start()
        await service.wait_ready()

    # --- the client -----------------------------------------------------------------------

    def body(self, spec: JobSpec) -> dict[str, Any]:
        return {
            "media_url": self.media.media_url(spec.key, spec.behaviour, spec.file),
            "webhook_url": self.receiver.hook_url(spec.tenant)
            + ("" if spec.webhook == "ok" else f"/{spec.webhook}"),
            "external_id": spec.key,
            "metadata": {"drill": self.name, "file": spec.file},
        }

    async def post_job(
        self, spec: JobSpec, *, key: str | None = None, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        assert self.http is not None
        enqueue = self.enqueues[self._rr % len(self.enqueues)]
        self._rr += 1
        return await self.http.post(
            enqueue.url + "/v1/jobs",
            json=body or self.body(spec),
            headers={
                "Authorization": f"Bearer {self.tenants[spec.tenant].api_key}",
                "Idempotency-Key": key or spec.key,
            },
        )

    async def submit(self, spec: JobSpec, patience: float = 180.0) -> Submission:
        """POST until the job is accepted, with the same Idempotency-Key every time (a
        client that retries after a 5xx or a dropped connection creates no duplicate)."""
        sub = Submission(spec)
        self.submissions.append(sub)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                response = await self.post_job(spec)
            except httpx.HTTPError as exc:
                sub.answers.append(type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            sub.answers.append(str(response.status_code))
            if response.status_code in (200, 202):
                sub.job_id = response.json()["id"]
                sub.accepted_at = time.time()
                return sub
            if response.status_code < 500 and response.status_code != 409:
                return sub  # a client error: not retried, reported
            await asyncio.sleep(0.5)
        return sub

    async def stream(self, specs: list[JobSpec], over_seconds: float) -> list[Submission]:
        """Send ``specs`` spread evenly over ``over_seconds``; returns when all are in."""
        started = time.monotonic()
        tasks = []
        for i, spec in enumerate(specs):
            due = started + over_seconds * i / max(len(specs), 1)
            await asyncio.sleep(max(due - time.monotonic(), 0))
            tasks.append(asyncio.create_task(self.submit(spec)))
        return list(await asyncio.gather(*tasks))

    # --- the database ---------------------------------------------------------------------

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn(self.database_url), timeout=5)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def wait_settled(self, timeout: float, quiet: float = 1.0) -> float | None:
        """Wait until every job is terminal; the seconds it took, ``None`` on timeout.
        Database errors (an outage) are waited out like anything else."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                rows = await self.query(
                    "SELECT count(*) FILTER (WHERE status <> ALL($1::text[])) AS open, "
                    "count(*) AS total FROM jobs",
                    list(TERMINAL),
                )
                if rows[0]["open"] == 0:
                    took = time.monotonic() - started
                    await asyncio.sleep(quiet)  # let a late duplicate delivery land
                    return took
            await asyncio.sleep(0.5)
        return None


class InFlightSampler:
    """Samples ``count(*) WHERE status IN ('TRIGGERED','PROCESSING')`` every ``interval``."""

    def __init__(self, database_url: str, interval: float = 0.1) -> None:
        self.database_url = database_url
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(dsn(self.database_url), timeout=2)
                    count = await conn.fetchval(
                        "SELECT count(*) FROM jobs WHERE status IN ('TRIGGERED','PROCESSING')"
                    )
                    self.samples.append((time.time(), int(count)))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    self.errors += 1
                    conn = None
                    await asyncio.sleep(0.5)
                await asyncio.sleep(self.interval)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def peak(self) -> int:
        return max((c for _, c in self.samples), default=0)
