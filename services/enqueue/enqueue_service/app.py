"""The enqueue service: the authenticated client API in front of the job store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from enqueue_service.notifier import NewJobNotifier
from enqueue_service.routes import router
from enqueue_service.service import ApiKeyCache, JobWriter
from enqueue_service.settings import EnqueueSettings, get_settings
from transcription_core import repository as repo
from transcription_core.db import asyncpg_dsn, create_engine, is_sqlite
from transcription_core.http import (
    BodySizeLimit,
    install_common_routes,
    install_problem_handlers,
    install_store_problem_handlers,
)
from transcription_core.repository import NOTIFY_SQL
from transcription_core.server import BoundedHttpTools


def create_app(settings: EnqueueSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine = create_engine(
            settings.database_url, "transcription-enqueue", settings.database_pool_size
        )
        writer = JobWriter(engine)
        if not is_sqlite(settings.database_url):
            writer.pool = pool = await create_insert_pool(settings)
            writer.notifier = NewJobNotifier(lambda: pool.execute(NOTIFY_SQL))
            writer.notifier.start()
        app.state.job_writer = writer
        try:
            yield
        finally:
            if writer.notifier is not None:
                await writer.notifier.stop()
            if writer.pool is not None:
                await writer.pool.close()
            await engine.dispose()

    # The docs (/docs, /redoc) load Swagger UI and ReDoc from this package, not a CDN: a
    # self-hosted service shows its docs on a network without internet.
    app = FastAPIOffline(
        static_url="/docs-assets",
        title="Transcription API",
        version="1.0",
        description="Enqueue media for transcription; results arrive at your webhook.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = ApiKeyCache(settings.api_key_cache_seconds)

    async def ready() -> bool:
        try:
            async with app.state.engine.connect() as conn:
                await repo.ping(conn)
        except Exception:
            return False
        return True

    install_problem_handlers(app)
    install_store_problem_handlers(app)
    install_common_routes(app, "enqueue", ready)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


async def create_insert_pool(settings: EnqueueSettings) -> asyncpg.Pool:
    """The plain asyncpg pool of the enqueue's hot path. Connections open on first use
    (the API starts while the database is down); nothing on them changes session state,
    so they go back to the pool without the default reset query's round trip."""

    async def no_reset(_conn: asyncpg.Connection) -> None:
        return None

    return await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url),
        min_size=0,
        max_size=settings.database_pool_size,
        max_inactive_connection_lifetime=300,
        reset=no_reset,
        server_settings={"application_name": "transcription-enqueue"},
    )


class EnqueueHttp(BoundedHttpTools):
    """The enqueue's HTTP protocol: each request must arrive whole in
    ``REQUEST_READ_TIMEOUT_SECONDS``, its head within ``MAX_REQUEST_HEAD_BYTES``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.read_timeout = settings.request_read_timeout_seconds
        self.max_head_bytes = settings.max_request_head_bytes


def serve(host: str, port: int, workers: int = 1) -> None:
    """Run the API with uvicorn, every option that bounds a client spelled out."""
    settings = get_settings()
    uvicorn.run(
        "enqueue_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=EnqueueHttp,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_limit_concurrency or None,
        timeout_worker_healthcheck=settings.http_worker_healthcheck_seconds,
        access_log=False,
        log_level=settings.log_level.lower(),
    )
