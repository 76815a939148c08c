"""The orchestrator service: the claim loop and retention, with health and metrics over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from orchestrator_service.clients import TranscriberClient
from orchestrator_service.listener import listen_forever
from orchestrator_service.retention import retain_forever
from orchestrator_service.service import Orchestrator
from orchestrator_service.settings import OrchestratorSettings, get_settings
from transcription_core.db import create_engine, is_sqlite
from transcription_core.http import (
    install_common_routes,
    install_problem_handlers,
    install_store_problem_handlers,
)


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url, "transcription-orchestrator", settings.database_pool_size
        )
        timeout = httpx.Timeout(settings.trigger_timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout) as http:
            orchestrator = Orchestrator(engine, TranscriberClient(http), settings)
            app.state.orchestrator = orchestrator
            tasks = [
                asyncio.create_task(orchestrator.run_forever(), name="orchestrator"),
                asyncio.create_task(retain_forever(engine, settings), name="retention"),
            ]
            if not is_sqlite(settings.database_url):
                tasks.append(
                    asyncio.create_task(
                        listen_forever(settings.database_url, orchestrator.wake), name="listen"
                    )
                )
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await engine.dispose()

    app = FastAPI(title="Transcription orchestrator", lifespan=lifespan)

    async def ready() -> bool:
        """Ready while rounds keep completing (a stuck loop fails the probe)."""
        orchestrator = getattr(app.state, "orchestrator", None)
        last: float | None = orchestrator.last_round_at if orchestrator else None
        stale_after = max(settings.poll_interval_seconds * 5, 30.0)
        return last is not None and time.monotonic() - last < stale_after

    install_problem_handlers(app)
    install_store_problem_handlers(app)
    install_common_routes(app, "orchestrator", ready)
    return app


def serve(host: str, port: int) -> None:
    uvicorn.run(
        "orchestrator_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_level=get_settings().log_level.lower(),
    )
