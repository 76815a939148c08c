"""Test data factories: plain async functions with keyword defaults."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from transcription_core import repository as repo
from transcription_core.job import Job
from transcription_core.models import utcnow
from transcription_core.repository import replicas
from transcription_core.repository.replicas import ReplicaState


async def make_tenant(engine: AsyncEngine, name: str = "org-test") -> repo.NewTenant:
    async with engine.begin() as conn:
        return await repo.create_tenant(conn, name)


async def make_job(
    engine: AsyncEngine,
    tenant: str = "org-test",
    *,
    media_url: str = "https://media.example.com/a.mp3",
    webhook_url: str = "https://hooks.example.com/t",
    **fields: Any,
) -> Job:
    """A QUEUED job; any other column can be set through ``fields`` afterwards."""
    async with engine.begin() as conn:
        job = await repo.insert_job(
            conn, repo.NewJob(tenant=tenant, media_url=media_url, webhook_url=webhook_url)
        )
        if fields:
            await conn.execute(repo.jobs.update().where(repo.jobs.c.id == job.id).values(**fields))
            changed = await repo.get_job(conn, job.id)
            assert changed is not None
            job = changed
    return job


async def make_jobs(engine: AsyncEngine, count: int, tenant: str = "org-test") -> list[str]:
    ids = []
    async with engine.begin() as conn:
        for _ in range(count):
            job = await repo.insert_job(
                conn,
                repo.NewJob(
                    tenant=tenant,
                    media_url="https://m.example.com/a.mp3",
                    webhook_url="https://h.example.com/t",
                ),
            )
            ids.append(job.id)
    return ids


async def status_of(engine: AsyncEngine, job_id: str) -> str:
    async with engine.connect() as conn:
        job = await repo.get_job(conn, job_id)
    assert job is not None
    return job.status


async def make_replica(
    engine: AsyncEngine,
    url: str = "",
    *,
    replica_id: str = "replica-1",
    slots: int = 100,
    running: int = 0,
    accepting: bool = True,
    model_saturated: bool = False,
    version: int = 0,
) -> ReplicaState:
    """A transcriber replica's row, heard from now (a stand-in transcriber at ``url``)."""
    state = ReplicaState(replica_id, url, slots, running, accepting, model_saturated, version)
    async with engine.begin() as conn:
        await replicas.report(conn, state, utcnow())
    return state
