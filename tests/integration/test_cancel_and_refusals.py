"""Cancel of finished and busy jobs, and refused triggers in a job's history (issue 10,
items 9 and 12), on real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_tenant
from transcription_core import lifecycle
from transcription_core import repository as repo
from transcription_core.job import Change, Job
from transcription_core.models import utcnow
from transcription_core.repository import transitions
from transcription_core.retry import RetryPolicy
from transcription_core.status import FailureReason, JobStatus

S = JobStatus


async def test_a_redelivered_job_is_finished_and_cannot_be_canceled(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient
) -> None:
    job = await make_job(engine, status=S.SUCCEEDED, attempts=1, completed_at=utcnow())
    async with engine.begin() as conn:
        await repo.save_transcript(conn, job.id, {"text": "hello", "segments": []})
    redelivered = await tenant_client.post(f"/v1/jobs/{job.id}/redeliver")
    assert redelivered.status_code == 202 and redelivered.json()["status"] == "SEND_FAILED"
    assert redelivered.json()["completed_at"] is not None
    canceled = await tenant_client.post(f"/v1/jobs/{job.id}/cancel")
    assert canceled.status_code == 409, canceled.text
    assert canceled.headers["content-type"].startswith("application/problem+json")
    after = (await tenant_client.get(f"/v1/jobs/{job.id}")).json()
    assert after["status"] == "SEND_FAILED" and after["transcript"] == {
        "text": "hello",
        "segments": [],
    }


async def test_cancel_wins_against_churn_and_never_answers_404(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer moves the job right after every read the cancel makes (a worker
    starting, failing, being retried): the cancel still cancels it, never answers "no
    such job"."""
    job = await make_job(engine, status=S.FAILED, attempts=1)
    policy = RetryPolicy(max_attempts=9, backoff_seconds=0, delivery_schedule=())
    following: dict[JobStatus, Callable[[Job], Change]] = {
        S.FAILED: lambda job: lifecycle.claimed(job, 60, utcnow()),
        S.TRIGGERED: lambda job: lifecycle.started(job, 60, utcnow()),
        S.PROCESSING: lambda job: lifecycle.failed(
            job, FailureReason.DOWNLOAD_FAILED, "HTTP 503", policy, utcnow()
        ),
    }
    moves: list[asyncio.Task[object]] = []

    async def move_on(current: Job) -> object:
        async with engine.begin() as conn:
            return await repo.apply(conn, following[current.status](current), "churn")

    read = repo.get_job

    async def read_then_churn(*args: object, **kwargs: object) -> object:
        row = await read(*args, **kwargs)  # type: ignore[arg-type]
        if row is not None and row.status in following:
            moves.append(asyncio.create_task(move_on(row)))
            await asyncio.sleep(0.05)  # the other writer commits now, if it can
        return row

    monkeypatch.setattr(transitions, "get_job", read_then_churn)  # the cancel's read
    canceled = await tenant_client.post(f"/v1/jobs/{job.id}/cancel")
    monkeypatch.undo()
    await asyncio.gather(*moves)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "CANCELED"


async def test_repeated_refusals_do_not_grow_the_history(engine: AsyncEngine) -> None:
    """A job whose trigger is refused again and again keeps a bounded history: the first
    refusal is recorded, later ones only counted on it."""
    await make_tenant(engine)
    job = await make_job(engine)
    for _ in range(20):
        async with engine.begin() as conn:
            claimed = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=60)
            assert [c.id for c in claimed] == [job.id]
            assert await repo.return_to_queue(conn, claimed[0], "the worker is full (HTTP 503)")
    async with engine.connect() as conn:
        events = await repo.job_events(conn, job.id)
        current = await repo.get_job(conn, job.id)
    assert current is not None and current.status == S.QUEUED and current.attempts == 0
    assert len(events) <= 3, [(e.from_status, e.to_status, e.detail) for e in events]
    # One chain of allowed moves that ends where the job is.
    assert events[-1].to_status == S.QUEUED
    for before, after in itertools.pairwise(events):
        assert after.from_status == before.to_status
    assert "20" in (events[-1].detail or ""), events[-1].detail


async def test_a_refused_retry_keeps_its_chain(engine: AsyncEngine) -> None:
    """Claimed from FAILED and refused twice: the history still reads as one chain."""
    await make_tenant(engine)
    job = await make_job(engine, status=S.FAILED, attempts=1, failure_reason="DOWNLOAD_FAILED")
    for _ in range(3):
        async with engine.begin() as conn:
            claimed = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=60)
            assert await repo.return_to_queue(conn, claimed[0], "refused (HTTP 503)")
    async with engine.connect() as conn:
        events = await repo.job_events(conn, job.id)
    moves = [(e.from_status, e.to_status) for e in events]
    assert moves == [(None, S.QUEUED), (S.FAILED, S.TRIGGERED), (S.TRIGGERED, S.QUEUED)]
