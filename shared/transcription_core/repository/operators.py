"""What operators and the orchestrator's gauges read: queue depth, the most triggers,
counts by status and reason, and the jobs a requeue may send back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.job import Job
from transcription_core.repository.history import triggers_since_start_by_id
from transcription_core.repository.tables import jobs
from transcription_core.status import (
    CLAIMABLE,
    IN_FLIGHT,
    TERMINAL,
    FailureReason,
    JobStatus,
    sql_in,
)


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    oldest_queued_at: datetime | None
    in_flight: int
    waiting_retry: int


async def queue_depth(conn: AsyncConnection) -> QueueDepth:
    """Counts of the unfinished jobs, read from the partial indexes that hold only them
    (never the history): still one row per job queued, so the orchestrator refreshes its
    gauges less often when this is slow."""
    claimable = await conn.execute(
        sa.select(jobs.c.status, sa.func.count(), sa.func.min(jobs.c.created_at))
        .where(sa.text(sql_in(CLAIMABLE, "jobs.status")))
        .group_by(jobs.c.status)
    )
    counts = {status: (count, oldest) for status, count, oldest in claimable}
    queued, oldest = counts.get(JobStatus.QUEUED, (0, None))
    retry = sum(counts.get(s, (0, None))[0] for s in (JobStatus.FAILED, JobStatus.SEND_FAILED))
    in_flight = (
        await conn.scalar(
            sa.select(sa.func.count()).select_from(jobs).where(sa.text(sql_in(IN_FLIGHT)))
        )
        or 0
    )
    return QueueDepth(queued, oldest, in_flight, retry)


async def most_triggers(conn: AsyncConnection, max_triggers: int) -> int:
    """The most triggers any job not yet finished had since it last started (0: none).

    A cheap maximum of ``attempts``; only the few jobs above ``max_triggers`` (redelivered
    ones, or ones something pushed past the claim's check) have their start looked up.
    """
    unfinished = jobs.c.status.in_(frozenset(JobStatus) - TERMINAL)
    most: int = (
        await conn.scalar(
            sa.select(sa.func.max(jobs.c.attempts)).where(
                unfinished, jobs.c.attempts <= max_triggers
            )
        )
        or 0
    )
    high: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(jobs.c.id, jobs.c.attempts)
                .where(unfinished, jobs.c.attempts > max_triggers)
                .order_by(jobs.c.attempts.desc())
                .limit(100)
            )
        ).all()
    )
    if high:
        most = max(most, *(await triggers_since_start_by_id(conn, high)).values())
    return most


@dataclass(frozen=True)
class Stats:
    since: datetime
    by_status: dict[str, int]
    by_failure_reason: dict[str, int]


async def stats(conn: AsyncConnection, since: datetime) -> Stats:
    """Jobs created or updated since ``since``, by status and by failure reason."""
    recent = sa.or_(jobs.c.updated_at >= since, jobs.c.created_at >= since)
    by_status: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(jobs.c.status, sa.func.count()).where(recent).group_by(jobs.c.status)
            )
        ).all()
    )
    by_reason: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(jobs.c.failure_reason, sa.func.count())
                .where(recent, jobs.c.failure_reason.is_not(None))
                .group_by(jobs.c.failure_reason)
            )
        ).all()
    )
    return Stats(since, by_status, by_reason)


async def requeue_candidates(
    conn: AsyncConnection,
    *,
    since: datetime,
    reasons: Iterable[str] | None = None,
    include_download_errors: bool = False,
    limit: int | None = None,
) -> list[Job]:
    """PERMAFAILED jobs that ended since ``since`` and an operator may send back."""
    query = sa.select(jobs).where(
        jobs.c.status == JobStatus.PERMAFAILED, jobs.c.completed_at >= since
    )
    if reasons:
        query = query.where(jobs.c.failure_reason.in_(list(reasons)))
    if not include_download_errors:
        client_side = [r for r in FailureReason if r.needs_client]
        query = query.where(
            sa.or_(jobs.c.failure_reason.is_(None), jobs.c.failure_reason.not_in(client_side))
        )
    query = query.order_by(jobs.c.completed_at, jobs.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [Job.from_row(row) for row in (await conn.execute(query)).mappings()]
