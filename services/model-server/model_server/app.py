"""The model server: the Whisper model behind HTTP, loaded once per process.

``create_app`` builds the app; its lifespan loads the model (in a thread), starts the
batcher, and stops it at shutdown. Run it with ``serve`` or
``uvicorn --factory model_server.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from model_server.batching import Batcher
from model_server.decoding import BatchDecoder
from model_server.files import UploadedFiles
from model_server.metrics import MODEL_INFO, ModelMetrics
from model_server.model import load_model
from model_server.routes import router
from model_server.service import ModelService
from model_server.settings import ModelServerSettings, get_settings
from transcription_core.http import BodySizeLimit, install_common_routes, install_problem_handlers

logger = logging.getLogger(__name__)


def create_app(settings: ModelServerSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = await asyncio.to_thread(load_model, settings)
        decoder = BatchDecoder(loaded.whisper)
        batcher = Batcher(
            decoder.decode,
            max_batch_size=settings.max_batch_size,
            max_wait_seconds=settings.batch_wait_ms / 1000,
            max_queued=settings.max_queued_chunks,
            retry_after_seconds=settings.queue_full_retry_after_seconds,
            observer=ModelMetrics(),
            workers=settings.model_workers,
        )
        batcher.start()
        app.state.service = ModelService(loaded, batcher)
        MODEL_INFO.labels(loaded.name, loaded.device, loaded.compute_type).set(1)
        logger.info("model %s ready", loaded.name, extra={"action": "model_ready"})
        try:
            yield
        finally:
            app.state.service = None
            await batcher.stop()

    app = FastAPI(
        title="Transcription model server",
        summary="Whisper (faster-whisper) behind HTTP, with dynamic batching.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = None
    app.state.files = UploadedFiles(settings)

    async def ready() -> bool:
        return app.state.service is not None

    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    install_common_routes(app, "model-server", ready)
    app.include_router(router)
    return app


def serve(host: str, port: int) -> None:
    """Run the model server with uvicorn (one process, one model)."""
    uvicorn.run(
        "model_server.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        log_level=get_settings().log_level.lower(),
    )
