"""Retention: finished jobs are deleted, with everything stored about them.

A finished job (SUCCEEDED, PERMAFAILED or CANCELED) is deleted with its events, chunks
and transcript (their foreign keys cascade) and its webhook payload (a column of the
job). The orchestrator deletes the jobs that finished more than ``RETENTION_DAYS`` ago
(``orchestrator_service.retention``), an operator those finished before a date
(``transcription purge``), and a client one job at once (``DELETE /v1/jobs/{id}``).

Bulk deletions run in small batches, each its own short transaction: a batch locks only
the rows it deletes and skips the rows another transaction holds (PostgreSQL), so
enqueues, claims and workers never wait on it. A job that is not finished is never
deleted, nor one finished once and being redelivered (back in SEND_FAILED).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from transcription_core.errors import Conflict
from transcription_core.repository import get_job, jobs
from transcription_core.status import TERMINAL


def _finished_before(before: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(jobs.c.status.in_(TERMINAL), jobs.c.completed_at < before)


async def count_finished_before(conn: AsyncConnection, before: datetime) -> int:
    """How many jobs finished before ``before``: what a purge would delete."""
    return int(
        await conn.scalar(
            sa.select(sa.func.count()).select_from(jobs).where(_finished_before(before))
        )
        or 0
    )


async def purge_batch(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` jobs finished before ``before`` (and what cascades from
    them) in the caller's transaction; returns how many."""
    batch = sa.select(jobs.c.id).where(_finished_before(before)).limit(limit)
    if conn.dialect.name == "postgresql":
        batch = batch.with_for_update(skip_locked=True)
    result = await conn.execute(jobs.delete().where(jobs.c.id.in_(batch.scalar_subquery())))
    return int(result.rowcount)


async def purge(
    engine: AsyncEngine, before: datetime, *, batch_size: int = 500, max_batches: int | None = None
) -> int:
    """Delete the jobs finished before ``before``, ``batch_size`` per transaction, at most
    ``max_batches`` transactions (``None``: until none is left). Returns how many."""
    deleted = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        async with engine.begin() as conn:
            count = await purge_batch(conn, before, batch_size)
        deleted += count
        batches += 1
        if count < batch_size:
            break
    return deleted


async def delete_finished_job(conn: AsyncConnection, job_id: str, tenant: str) -> bool:
    """Delete one finished job of ``tenant`` and everything about it, in the caller's
    transaction. ``False``: there is no such job. Raises :class:`Conflict` for a job
    not finished (or being redelivered): a worker may hold it."""
    job = await get_job(conn, job_id, tenant, for_update=True)
    if job is None:
        return False
    if job.status not in TERMINAL:
        raise Conflict(
            f"the job is {job.status}: only a finished job (SUCCEEDED, PERMAFAILED, CANCELED) "
            "can be deleted; cancel it first"
        )
    await conn.execute(jobs.delete().where(jobs.c.id == job_id))
    return True
