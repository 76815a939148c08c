"""The enqueue app with the changes ``bench/enqueue_ablation.py`` measures, applied from
outside (monkeypatches), for benchmarking only.

``BENCH_PATCHES`` (comma-separated) picks them:

- ``no_pre_ping``: the pool stops pinging on checkout (with asyncpg the ping is
  ``BEGIN; ; ROLLBACK``: three round trips before every request's own one);
- ``coalesced_notify``: expects the jobs INSERT trigger disabled (the ablation does
  that in its scratch database) and sends ``NOTIFY transcription_jobs``
  from a background task instead, at most once per ``BENCH_NOTIFY_MS`` (default 10 ms),
  on a connection of its own in autocommit: no enqueue statement notifies, so commits
  are no longer serialised by PostgreSQL's notify lock.

Pool size and TLS are settings, not patches: ``DATABASE_POOL_SIZE`` and ``?ssl=disable``
in ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import asyncpg
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service import app as app_module
from enqueue_service import service
from enqueue_service.settings import get_settings
from transcription_core.db import asyncpg_dsn

PATCHES = {p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()}
KNOWN = {"no_pre_ping", "coalesced_notify"}


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
