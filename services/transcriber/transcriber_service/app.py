"""The transcriber service (the worker, "pynode")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import uvicorn
from fastapi import FastAPI

from transcriber_service.model_client import ModelServerClient
from transcriber_service.pipeline import Pipeline
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

log = logging.getLogger(__name__)


def create_app(settings: TranscriberSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

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
            model = ModelServerClient(
                model_http, settings.model_server_url, max_attempts=settings.model_request_attempts
            )
            worker = Worker(
                engine,
                Pipeline(engine, media_http, model, settings),
                WebhookSender(
                    webhook_http,
                    timeout=settings.webhook_timeout_seconds,
                    allow_private=settings.allow_private_urls,
                    max_response_bytes=settings.webhook_response_max_bytes,
                ),
                settings,
            )
            app.state.worker = worker
            try:
                yield
            finally:
                await worker.drain(settings.shutdown_grace_seconds)
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
    uvicorn.run(
        "transcriber_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
