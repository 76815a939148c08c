"""KEDA's query (deploy/knative/transcriber.yaml) on the real schema: what the transcribers
should be running, which KEDA divides by WORKER_MAX_JOBS to get their replicas."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_replica, make_tenant
from transcription_core import repository as repo
from transcription_core.models import utcnow

pytestmark = pytest.mark.postgres

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "knative" / "transcriber.yaml"
(SCALED,) = [
    doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc["kind"] == "ScaledObject"
]
QUERY = SCALED["spec"]["triggers"][0]["metadata"]["query"]


async def demand(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(sa.text(QUERY))
    assert isinstance(value, int)
    return value


async def test_the_query_counts_jobs_in_flight_and_due_within_the_budget(
    pg_engine: AsyncEngine,
) -> None:
    await make_tenant(pg_engine)
    later = utcnow() + timedelta(hours=1)
    assert await demand(pg_engine) == 0
    for _ in range(3):
        await make_job(pg_engine)  # QUEUED, due
    await make_job(pg_engine, status="FAILED", attempts=1)  # due for its retry
    await make_job(pg_engine, status="FAILED", attempts=1, due_at=later)  # not yet
    await make_job(pg_engine, status="PROCESSING", attempts=1, lease_expires_at=later)
    await make_job(pg_engine, status="TRIGGERED", attempts=1, lease_expires_at=later)
    await make_job(pg_engine, status="SUCCEEDED", attempts=1)
    assert await demand(pg_engine) == 6  # 2 in flight, 4 due: 3 replicas of 2

    # The model tier holds a transcriber back: only what runs counts.
    await make_replica(pg_engine, "http://a", replica_id="a", running=2, model_saturated=True)
    assert await demand(pg_engine) == 2
    await make_replica(pg_engine, "http://a", replica_id="a", running=0, model_saturated=True)
    assert await demand(pg_engine) == 6  # nothing running there: the flag says nothing

    # The budget in force caps it (its runtime override too).
    async with pg_engine.begin() as conn:
        await repo.set_runtime_setting(conn, repo.LIMIT_SETTING, "5", "test")
    assert await demand(pg_engine) == 5
