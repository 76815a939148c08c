"""The jobs' history (``job_events``): appended with every change, read back, and
counted (triggers since a job last started; refused triggers folded into one row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transcription_core.job import Event, Job
from transcription_core.lifecycle import TRIGGER_REFUSED
from transcription_core.repository.tables import events
from transcription_core.status import JobStatus

#: Moves out of a terminal status: a client's redelivery (SUCCEEDED | PERMAFAILED ->
#: SEND_FAILED) or an operator's requeue (PERMAFAILED -> QUEUED, attempts back to 0).
_RESTARTS = (JobStatus.SUCCEEDED, JobStatus.PERMAFAILED)


@dataclass(frozen=True)
class LoggedEvent:
    """A row of ``job_events``."""

    id: int
    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    reason: str | None
    detail: str | None
    attempt: int
    actor: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> LoggedEvent:
        from_status = row["from_status"]
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            from_status=None if from_status is None else JobStatus(from_status),
            to_status=JobStatus(row["to_status"]),
            reason=row["reason"],
            detail=row["detail"],
            attempt=row["attempt"],
            actor=row["actor"],
            created_at=row["created_at"],
        )


def event_columns(event: Event) -> dict[str, object]:
    """The columns of ``job_events`` an event fills, all but the actor (the writer's)."""
    return {
        "job_id": event.job_id,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "reason": event.reason,
        "detail": event.detail,
        "attempt": event.attempt,
        "created_at": event.at,
    }


async def log_events(conn: AsyncConnection, rows: Sequence[Event], actor: str) -> None:
    """Append ``rows`` to the history, each by ``actor``."""
    if rows:
        await conn.execute(events.insert(), [event_columns(e) | {"actor": actor} for e in rows])


async def job_events(conn: AsyncConnection, job_id: str) -> list[LoggedEvent]:
    result = await conn.execute(
        sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id)
    )
    return [LoggedEvent.from_row(row) for row in result.mappings()]


async def triggers_since_start(conn: AsyncConnection, jobs_: Sequence[Job]) -> dict[str, int]:
    """How often each job was triggered since it last started: since it was enqueued,
    or since the latest redelivery or requeue (its ``attempts`` then is in the event log).

    ``attempts`` counts every claim, delivery retries included; a refused trigger and a
    shutdown's hand-back take theirs back, a requeue starts it at 0 again, a redelivery
    keeps it (so the API's ``attempts`` is the job's whole history).
    """
    return await triggers_since_start_by_id(conn, {job.id: job.attempts for job in jobs_})


async def triggers_since_start_by_id(
    conn: AsyncConnection, attempts: Mapping[str, int]
) -> dict[str, int]:
    """:func:`triggers_since_start` of the jobs whose ``attempts`` are given by id."""
    latest = (
        sa.select(sa.func.max(events.c.id))
        .where(events.c.job_id.in_(list(attempts)), events.c.from_status.in_(_RESTARTS))
        .group_by(events.c.job_id)
    )
    started: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(events.c.job_id, events.c.attempt).where(events.c.id.in_(latest))
            )
        ).all()
    )
    return {job_id: count - started.get(job_id, 0) for job_id, count in attempts.items()}


async def coalesce_refusals(conn: AsyncConnection, job_id: str) -> None:
    """Fold ``[refusal, claim, refusal]`` at the end of a job's history into the first,
    whose detail counts them: repeated refusals never grow the history."""
    result = await conn.execute(
        sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id.desc()).limit(3)
    )
    last = [LoggedEvent.from_row(row) for row in result.mappings()]
    if len(last) < 3 or not (last[2].reason == last[0].reason == TRIGGER_REFUSED):
        return
    first, claim, refusal = last[2], last[1], last[0]
    times = refusal_count(first.detail) + 1
    await conn.execute(events.delete().where(events.c.id.in_([refusal.id, claim.id])))
    await conn.execute(
        events.update()
        .where(events.c.id == first.id)
        .values(detail=f"refused {times} times; last: {refusal.detail}")
    )


def refusal_count(detail: str | None) -> int:
    """How many refused triggers one ``TRIGGER_REFUSED`` event stands for (its detail
    counts them once there are several; see :func:`coalesce_refusals`)."""
    words = (detail or "").split(" ", 2)
    if len(words) == 3 and words[0] == "refused" and words[1].isdigit():
        return int(words[1])
    return 1
