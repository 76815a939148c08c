"""The enqueue service: the authenticated client API in front of the job store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from enqueue_service.routes import router
from enqueue_service.service import ApiKeyCache
from enqueue_service.settings import EnqueueSettings, get_settings
from transcription_core.db import create_engine
from transcription_core.http import BodySizeLimit, install_common_routes, install_problem_handlers


def create_app(settings: EnqueueSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_engine(
            settings.database_url, "transcription-enqueue", settings.database_pool_size
        )
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(
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
                await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    install_problem_handlers(app)
    install_common_routes(app, "enqueue", ready)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


def serve(host: str, port: int, workers: int = 1) -> None:
    uvicorn.run(
        "enqueue_service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=get_settings().log_level.lower(),
    )
