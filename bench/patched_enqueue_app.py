"""The enqueue app with the changes ``bench/enqueue_ablation.py`` measures, applied from
outside (monkeypatches and FastAPI's ``dependency_overrides``), for benchmarking only.

``BENCH_PATCHES`` (comma-separated) picks them:

- ``no_pre_ping``: the pool stops pinging on checkout (with asyncpg the ping is
  ``BEGIN; ;  ROLLBACK``: three round trips before every request's own);
- ``prebuilt_sql``: ``insert_job`` executes two statements built once (``jobs.insert()
  .returning(...)`` and ``job_events.insert()``) with parameters, instead of building a
  new ``insert().values(...)`` per request (statement construction, cache-key
  generation and coercion of every value);
- ``coalesced_notify``: expects the jobs INSERT trigger disabled (the ablation does
  that in its scratch database) and sends ``NOTIFY transcription_jobs``
  from a background task instead, at most once per ``BENCH_NOTIFY_MS`` (default 10 ms),
  on a connection of its own in autocommit: no enqueue transaction notifies, so commits
  are no longer serialised by PostgreSQL's notify lock.

Pool size and TLS are settings, not patches: ``DATABASE_POOL_SIZE`` and ``?ssl=disable``
in ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import Any

import asyncpg
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from enqueue_service import app as app_module
from enqueue_service import service
from enqueue_service.settings import get_settings
from transcription_core import repository as repo
from transcription_core.db import asyncpg_dsn
from transcription_core.errors import DuplicateIdempotencyKey
from transcription_core.models import utcnow
from transcription_core.status import JobStatus

PATCHES = {p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()}
KNOWN = {"no_pre_ping", "prebuilt_sql", "coalesced_notify"}


# --- statements built once ------------------------------------------------------------

_JOB_INSERT = repo.jobs.insert().returning(*repo.jobs.c)
_EVENT_INSERT = repo.events.insert()


async def insert_job_prebuilt(
    conn: AsyncConnection, new: repo.NewJob, actor: str = "enqueue"
) -> Any:
    now = utcnow()
    job_id = str(uuid.uuid4())
    values = {
        "id": job_id,
        "tenant": new.tenant,
        "status": JobStatus.QUEUED,
        "attempts": 0,
        "deliveries": 0,
        "external_id": new.external_id,
        "media_url": new.media_url,
        "webhook_url": new.webhook_url,
        "language": new.language,
        "metadata": new.metadata or {},
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "due_at": now,
        "created_at": now,
        "updated_at": now,
    }
    try:
        row = (await conn.execute(_JOB_INSERT, values)).mappings().one()
    except IntegrityError as exc:
        if new.idempotency_key is not None:
            raise DuplicateIdempotencyKey(new.idempotency_key) from exc
        raise
    await conn.execute(_EVENT_INSERT, repo._event(job_id, None, JobStatus.QUEUED, 0, actor, now))
    return row


# --- coalesced NOTIFY -----------------------------------------------------------------


class Notifier:
    """One ``NOTIFY`` per interval at most, after commits, on a connection of its own."""

    def __init__(self, database_url: str, interval: float) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.interval = interval
        self.pending = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.sent = 0

    def poke(self) -> None:
        self.pending.set()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while True:
                await self.pending.wait()
                self.pending.clear()
                await conn.execute("NOTIFY transcription_jobs")
                self.sent += 1
                await asyncio.sleep(self.interval)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


def create_app() -> FastAPI:
    unknown = PATCHES - KNOWN
    if unknown:
        raise SystemExit(f"unknown BENCH_PATCHES: {sorted(unknown)}; known: {sorted(KNOWN)}")
    settings = get_settings()
    if "no_pre_ping" in PATCHES:
        original_create_engine = app_module.create_engine

        def create_engine(*args: Any, **kwargs: Any) -> AsyncEngine:
            engine = original_create_engine(*args, **kwargs)
            engine.sync_engine.pool._pre_ping = False
            return engine

        app_module.create_engine = create_engine  # type: ignore[assignment]
    if "prebuilt_sql" in PATCHES:
        repo.insert_job = insert_job_prebuilt  # type: ignore[assignment]
    if "coalesced_notify" in PATCHES:
        interval = float(os.environ.get("BENCH_NOTIFY_MS", "10")) / 1000
        notifier = Notifier(settings.database_url, interval)
        original_enqueue = service.enqueue

        async def enqueue(*args: Any, **kwargs: Any) -> service.Enqueued:
            result = await original_enqueue(*args, **kwargs)
            if result.created:
                notifier.poke()
            return result

        service.enqueue = enqueue  # type: ignore[assignment]
    return app_module.create_app(settings)
