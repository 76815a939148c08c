"""Finished jobs do not stay forever: retention in batches, a client's delete, the
operator's purge; on real PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_tenant
from orchestrator_service.retention import retain_once
from orchestrator_service.settings import OrchestratorSettings
from transcription_cli.main import main as cli
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.repository import retention
from transcription_core.status import JobStatus

S = JobStatus


async def finished_job(
    engine: AsyncEngine, completed_at: datetime, status: JobStatus = S.SUCCEEDED, **fields: object
) -> str:
    """A finished job with a transcript, two chunks, an event and a webhook payload."""
    job = await make_job(
        engine,
        status=status,
        attempts=1,
        completed_at=completed_at,
        webhook_event=repo.SUCCEEDED_EVENT,
        webhook_message_id="msg_1",
        webhook_payload='{"data": "the transcript"}',
        **fields,
    )
    async with engine.begin() as conn:
        await repo.save_transcript(conn, job.id, {"text": "private words", "segments": []})
        for index in range(2):
            await repo.save_chunk(conn, job.id, index, index * 30.0, index * 30.0 + 30, {})
    return str(job.id)


async def rows_of(engine: AsyncEngine, job_id: str) -> dict[str, int]:
    """How many rows each table holds about one job."""
    counts = {}
    async with engine.connect() as conn:
        for table in (repo.jobs, repo.events, repo.chunks, repo.transcripts):
            column = table.c.id if table is repo.jobs else table.c.job_id
            counts[table.name] = int(
                await conn.scalar(sa.select(sa.func.count()).where(column == job_id)) or 0
            )
    return counts


GONE = {"jobs": 0, "job_events": 0, "job_chunks": 0, "transcripts": 0}


async def job_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(repo.jobs)) or 0)


# --- the client's delete -------------------------------------------------------------


async def test_a_deleted_job_is_gone_with_its_transcript_chunks_and_events(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient
) -> None:
    job_id = await finished_job(engine, utcnow())
    assert (await rows_of(engine, job_id))["transcripts"] == 1
    deleted = await tenant_client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert await rows_of(engine, job_id) == GONE
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript"):
        gone = await tenant_client.get(path)
        assert gone.status_code == 404, gone.text
        assert gone.headers["content-type"].startswith("application/problem+json")
    assert (await tenant_client.delete(f"/v1/jobs/{job_id}")).status_code == 404
    assert job_id not in {j["id"] for j in (await tenant_client.get("/v1/jobs")).json()["jobs"]}


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.PERMAFAILED, S.CANCELED])
async def test_every_finished_status_can_be_deleted(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient, status: JobStatus
) -> None:
    job_id = await finished_job(engine, utcnow(), status)
    assert (await tenant_client.delete(f"/v1/jobs/{job_id}")).status_code == 204
    assert await rows_of(engine, job_id) == GONE


@pytest.mark.parametrize("status", [S.QUEUED, S.TRIGGERED, S.PROCESSING, S.FAILED, S.SEND_FAILED])
async def test_a_job_not_finished_cannot_be_deleted(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient, status: JobStatus
) -> None:
    job = await make_job(engine, status=status, attempts=1)
    answer = await tenant_client.delete(f"/v1/jobs/{job.id}")
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert status in answer.json()["detail"]
    assert (await rows_of(engine, job.id))["jobs"] == 1
    assert (await tenant_client.get(f"/v1/jobs/{job.id}")).json()["status"] == status


async def test_a_job_being_redelivered_cannot_be_deleted(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient
) -> None:
    """A redelivery puts a finished job back in SEND_FAILED: a worker may be sending its
    transcript right now, so it is not deleted under it."""
    job_id = await finished_job(engine, utcnow())
    assert (await tenant_client.post(f"/v1/jobs/{job_id}/redeliver")).status_code == 202
    assert (await tenant_client.delete(f"/v1/jobs/{job_id}")).status_code == 409
    assert (await rows_of(engine, job_id))["transcripts"] == 1


async def test_another_tenants_job_is_404_and_stays(
    engine: AsyncEngine, tenant_client: httpx.AsyncClient
) -> None:
    await make_tenant(engine, "org-other")
    job = await make_job(
        engine, tenant="org-other", status=S.SUCCEEDED, attempts=1, completed_at=utcnow()
    )
    assert (await tenant_client.delete(f"/v1/jobs/{job.id}")).status_code == 404
    assert (await rows_of(engine, job.id))["jobs"] == 1


# --- retention in batches ----------------------------------------------------------------


async def test_purge_deletes_jobs_finished_before_the_cutoff_and_nothing_else(
    engine: AsyncEngine,
) -> None:
    await make_tenant(engine)
    now = utcnow()
    old = [
        await finished_job(engine, now - timedelta(days=40), status)
        for status in (S.SUCCEEDED, S.PERMAFAILED, S.CANCELED, S.SUCCEEDED, S.SUCCEEDED)
    ]
    recent = await finished_job(engine, now - timedelta(days=1))
    # Finished long ago but being redelivered (SEND_FAILED keeps its completed_at): kept.
    redelivering = await finished_job(engine, now - timedelta(days=40), S.SEND_FAILED)
    running = (await make_job(engine, status=S.PROCESSING, attempts=1)).id
    cutoff = now - timedelta(days=30)
    async with engine.connect() as conn:
        assert await retention.count_finished_before(conn, cutoff) == 5
    deleted = await retention.purge(engine, cutoff, batch_size=2)
    assert deleted == 5
    for job_id in old:
        assert await rows_of(engine, job_id) == GONE
    for job_id in (recent, redelivering, running):
        assert (await rows_of(engine, job_id))["jobs"] == 1
    assert (await rows_of(engine, recent))["transcripts"] == 1


async def test_a_purge_run_is_bounded(engine: AsyncEngine) -> None:
    await make_tenant(engine)
    for _ in range(5):
        await finished_job(engine, utcnow() - timedelta(days=40))
    cutoff = utcnow() - timedelta(days=30)
    assert await retention.purge(engine, cutoff, batch_size=2, max_batches=1) == 2
    assert await job_count(engine) == 3
    assert await retention.purge(engine, cutoff, batch_size=2) == 3
    assert await job_count(engine) == 0


async def test_the_orchestrator_keeps_jobs_for_the_retention_window(
    engine: AsyncEngine, database_url: str
) -> None:
    await make_tenant(engine)
    old = await finished_job(engine, utcnow() - timedelta(days=31))
    recent = await finished_job(engine, utcnow() - timedelta(days=29))
    forever = OrchestratorSettings(database_url=database_url, retention_days=0)
    assert await retain_once(engine, forever) == 0
    assert (await rows_of(engine, old))["jobs"] == 1
    month = OrchestratorSettings(database_url=database_url, retention_days=30)
    assert await retain_once(engine, month) == 1
    assert await rows_of(engine, old) == GONE
    assert (await rows_of(engine, recent))["jobs"] == 1


async def test_under_steady_load_the_table_stops_growing_once_the_window_is_reached(
    engine: AsyncEngine,
) -> None:
    """Ten jobs finish every simulated hour and retention runs every hour with a window
    of five hours: the job count grows for five hours, then stays flat."""
    await make_tenant(engine)
    start = utcnow() - timedelta(hours=48)
    counts = []
    for hour in range(12):
        now = start + timedelta(hours=hour)
        for _ in range(10):
            await finished_job(engine, now)
        await retention.purge(engine, now - timedelta(hours=5), batch_size=7)
        counts.append(await job_count(engine))
    assert counts[:5] == [10, 20, 30, 40, 50]
    assert set(counts[5:]) == {60}


# --- the operator's purge ------------------------------------------------------------


async def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli, args)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("before", ["30d", "{date}"])
async def test_the_purge_command_dry_run_then_for_real(
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    before: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    await make_tenant(engine)
    old = await finished_job(engine, utcnow() - timedelta(days=40))
    recent = await finished_job(engine, utcnow() - timedelta(days=1))
    before = before.format(date=(utcnow() - timedelta(days=30)).date().isoformat())
    code, out = await run_cli(["purge", "--before", before, "--dry-run", "--json"], capsys)
    assert code == 0, out
    data = json.loads(out)
    assert (data["dry_run"], data["count"]) == (True, 1)
    assert (await rows_of(engine, old))["jobs"] == 1
    code, out = await run_cli(["purge", "--before", before], capsys)
    assert code == 0 and "deleted 1 finished job(s)" in out
    assert await rows_of(engine, old) == GONE
    assert (await rows_of(engine, recent))["jobs"] == 1


async def test_the_purge_command_refuses_a_cutoff_it_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(cli, ["purge", "--before", "last tuesday"])
    assert exit_.value.code == 2
    assert "--before" in capsys.readouterr().err
