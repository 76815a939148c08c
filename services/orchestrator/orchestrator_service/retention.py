"""Retention in the orchestrator: every ``RETENTION_INTERVAL_SECONDS``, the jobs that
finished more than ``RETENTION_DAYS`` ago are deleted with everything about them, in
batches of ``RETENTION_BATCH_SIZE`` (each its own short transaction), at most
``RETENTION_MAX_BATCHES`` per run (``transcription_core.repository.retention``). Every replica runs
it; their batches skip each other's rows."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator_service import metrics
from orchestrator_service.settings import OrchestratorSettings
from transcription_core.models import utcnow
from transcription_core.repository import retention

log = logging.getLogger(__name__)


async def retain_once(engine: AsyncEngine, settings: OrchestratorSettings) -> int:
    """One run; returns how many jobs it deleted (none when ``RETENTION_DAYS`` is 0)."""
    if settings.retention_days <= 0:
        return 0
    before = utcnow() - timedelta(days=settings.retention_days)
    deleted = await retention.purge(
        engine,
        before,
        batch_size=settings.retention_batch_size,
        max_batches=settings.retention_max_batches,
    )
    if deleted:
        metrics.PURGED.inc(deleted)
        log.info(
            "deleted %d jobs finished before %s",
            deleted,
            before.isoformat(timespec="seconds"),
            extra={"action": "retention", "deleted": deleted},
        )
    return deleted


async def retain_forever(engine: AsyncEngine, settings: OrchestratorSettings) -> None:
    """Run after run until cancelled; a failed run is logged and tried again later."""
    while True:
        try:
            await retain_once(engine, settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention run failed", extra={"action": "retention"})
        await asyncio.sleep(settings.retention_interval_seconds)
