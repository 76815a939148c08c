"""The transcriber service (the worker, "pynode")."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import uvicorn
from fastapi import FastAPI

from transcriber_service.model_capacity import ModelCapacity
from transcriber_service.model_client import ModelServerClient
from transcriber_service.pipeline import Pipeline
from transcriber_service.replica import ReplicaReporter, advertised_url
from transcriber_service.routes import router
from transcriber_service.service import Worker
from transcriber_service.settings import TranscriberSettings, get_settings
from transcriber_service.webhooks import WebhookSender
from transcriber_service.workdir import jobs_root, remove_stale
from transcription_core.db import create_engine
from transcription_core.http import (
    install_common_routes,
    install_problem_handlers,
    install_store_problem_handlers,
)
from transcription_core.speakers import diarization_installed

log = logging.getLogger(__name__)


def create_app(settings: TranscriberSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.diarization and not diarization_installed():
        raise RuntimeError(
            "DIARIZATION=true, but the diarize extra is not installed here: install "
            "'transcription-service[diarize]', or set DIARIZATION=false for the enqueue "
            "service and the transcribers alike"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What attempts killed outright left behind (an emptyDir outlives a restart).
        stale = await asyncio.to_thread(remove_stale, jobs_root(settings.work_dir))
        if stale:
            log.warning(
                "removed %d work dirs left by attempts that did not end",
                len(stale),
                extra={"action": "start", "work_dirs": stale},
            )
        engine = create_engine(
            settings.database_url, "transcription-transcriber", settings.database_pool_size
        )
        media_timeout = httpx.Timeout(
            connect=settings.download_connect_timeout_seconds,
            read=settings.download_read_timeout_seconds,
            write=settings.download_read_timeout_seconds,
            pool=settings.download_connect_timeout_seconds,
        )
        model_timeout = httpx.Timeout(settings.model_request_timeout_seconds, connect=10.0)
        async with (
            httpx.AsyncClient(
                timeout=media_timeout, follow_redirects=False, cookies=_no_cookies()
            ) as media_http,
            httpx.AsyncClient(timeout=model_timeout) as model_http,
            httpx.AsyncClient(follow_redirects=False, cookies=_no_cookies()) as webhook_http,
        ):
            capacity = ModelCapacity(settings.chunk_concurrency * settings.worker_max_jobs)
            model = ModelServerClient(
                model_http,
                settings.model_server_url,
                capacity=capacity,
                max_attempts=settings.model_request_attempts,
                busy_deadline=settings.model_busy_deadline_seconds,
            )
            worker = Worker(
                engine,
                Pipeline(engine, media_http, model, settings),
                WebhookSender(
                    webhook_http,
                    timeout=settings.webhook_timeout_seconds,
                    allow_private=settings.allow_private_urls,
                    allowed_networks=settings.private_networks_allowed,
                    max_response_bytes=settings.webhook_response_max_bytes,
                ),
                settings,
            )
            reporter = ReplicaReporter(
                engine,
                worker,
                capacity,
                url=settings.advertise_url,
                heartbeat_seconds=settings.lease_seconds / 3,
            )
            app.state.worker = worker
            app.state.model_capacity = capacity
            app.state.replica = reporter
            reporter.start()
            try:
                yield
            finally:
                await worker.drain(settings.shutdown_grace_seconds)
                await reporter.stop()
                await engine.dispose()

    app = FastAPI(title="Transcription worker", lifespan=lifespan)
    install_problem_handlers(app)
    install_store_problem_handlers(app)
    install_common_routes(app, "transcriber")
    app.include_router(router)
    return app


def _no_cookies() -> CookieJar:
    """A jar that keeps nothing: one client serves every tenant's URLs."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def serve(host: str, port: int) -> None:
    settings = get_settings()
    if not settings.advertise_url:
        # The replica reports where it listens, for the orchestrator to trigger it there.
        os.environ["ADVERTISE_URL"] = advertised_url(host, port)
        get_settings.cache_clear()
    uvicorn.run(
        "transcriber_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
