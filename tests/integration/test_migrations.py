"""Migrations bring an empty PostgreSQL and an empty SQLite file to the models' schema."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from transcription_core import migrate
from transcription_core import repository as repo
from transcription_core.db import create_engine
from transcription_core.job import Job
from transcription_core.models import Base
from transcription_core.options import Task


async def _diff(url: str) -> list:
    engine = create_engine(url, "migration-test")
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


def _round_trip(url: str) -> None:
    migrate.upgrade(url)
    migrate.downgrade(url, "base")
    migrate.upgrade(url)


@pytest.fixture
def empty_pg(pg_template: str, pg_url: str) -> str:
    migrate.downgrade(pg_url, "base")
    return pg_url


def test_postgres_upgrade_downgrade_upgrade_matches_the_models(empty_pg: str) -> None:
    _round_trip(empty_pg)
    assert asyncio.run(_diff(empty_pg)) == []


def test_sqlite_upgrade_downgrade_upgrade_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    _round_trip(url)
    assert asyncio.run(_diff(url)) == []


async def _job_before_options(url: str) -> str:
    """A job written by the schema of revision 0004, before the job options."""
    engine = create_engine(url, "migration-test")
    try:
        async with engine.begin() as conn:
            await repo.create_tenant(conn, "org-old")
            await conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, tenant, status, attempts, deliveries, media_url, "
                    "webhook_url, metadata, due_at, created_at, updated_at) VALUES ('old-1', "
                    "'org-old', 'QUEUED', 0, 0, 'https://m.example.com/a', "
                    "'https://h.example.com/h', '{}', :now, :now, :now)"
                ),
                {"now": datetime.now(UTC)},
            )
    finally:
        await engine.dispose()
    return "old-1"


async def _read_job(url: str, job_id: str) -> Job | None:
    engine = create_engine(url, "migration-test")
    try:
        async with engine.connect() as conn:
            return await repo.get_job(conn, job_id)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_jobs_from_before_the_options_read_back_with_the_defaults(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if dialect == "postgresql":
        url = request.getfixturevalue("empty_pg")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0004")
    job_id = asyncio.run(_job_before_options(url))
    migrate.upgrade(url)
    job = asyncio.run(_read_job(url, job_id))
    assert job is not None and job.task is Task.TRANSCRIBE
    assert (job.word_timestamps, job.prompt, job.hotwords, job.multichannel) == (
        False,
        None,
        None,
        False,
    )
    assert (job.diarize, job.speakers, job.min_speakers, job.max_speakers) == (
        False,
        None,
        None,
        None,
    )
    migrate.downgrade(url, "0004")  # and back: the columns go, the job stays
    migrate.upgrade(url)
    assert asyncio.run(_read_job(url, job_id)) is not None
