"""Defects the fault drills turned up, each pinned by a test (all four are fixed; the
tests keep them fixed).

None of them loses a job or a transcript; they cost retries, CPU and a misleading event
log. The drills' report (``faults/results/``) gives the numbers seen under load.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from faults.db import drop
from faults.drills import PostgresFault, RunContext
from faults.stack import Stack, plan_jobs
from transcriber_service.service import Worker
from transcriber_service.settings import TranscriberSettings
from transcriber_service.webhooks import Delivery
from transcription_core import repository as repo
from transcription_core.db import create_engine
from transcription_core.models import utcnow

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def _count(stack: Stack, from_status: str, to_status: str) -> int:
    rows = await stack.query(
        "SELECT count(*) AS n FROM job_events WHERE from_status = $1 AND to_status = $2",
        from_status,
        to_status,
    )
    return int(rows[0]["n"])


async def _refusals(stack: Stack) -> int:
    """Refused triggers so far: one TRIGGER_REFUSED event may count several."""
    rows = await stack.query(
        "SELECT detail FROM job_events WHERE reason = $1", repo.TRIGGER_REFUSED
    )
    return sum(repo.refusal_count(row["detail"]) for row in rows)


@pytest.mark.model
def test_a_full_replica_is_not_sent_triggers_again_and_again(fault_run: RunContext) -> None:
    """One replica with room for one job, a limit of three: while the first job holds the
    slot (the model server is down, so its chunk is being retried), the other two wait.
    Before, each was triggered and refused about once a second (a claim/refuse loop, then
    bounded by Retry-After); with dispatch that knows the replicas' free slots they are not
    triggered at all while the replica is full."""

    async def scenario() -> tuple[int, int]:
        url = await fault_run.template.fresh("busy_loop")
        stack = Stack(
            name="busy-loop",
            database_url=url,
            tenants=fault_run.tenants,
            model_server_url=fault_run.model_server_url,
            workdir=fault_run.workdir / "busy-loop",
            transcribers=1,
            env={"WORKER_MAX_JOBS": "1", "MAX_CONCURRENT_TRANSCRIPTION_JOBS": "3"},
        )
        try:
            async with stack:
                await stack.model.stop()  # the first job's chunk waits, holding the slot
                for spec in plan_jobs(3, fault_run.tenants, jfk_every=0):
                    await stack.submit(spec)
                await asyncio.sleep(1.0)
                before = await _refusals(stack)
                await asyncio.sleep(5.0)
                rows = await stack.query("SELECT count(*) AS n FROM jobs WHERE status = 'QUEUED'")
                return await _refusals(stack) - before, int(rows[0]["n"])
        finally:
            await drop(url)

    requeues, waiting = asyncio.run(scenario())
    assert waiting == 2, f"{waiting} jobs waiting: the scenario needs two behind a full replica"
    assert requeues == 0, f"{requeues} refused triggers in 5 s for 2 waiting jobs"


@pytest.mark.model
def test_the_success_event_does_not_repeat_the_previous_failure(fault_run: RunContext) -> None:
    """The media server answers 503 once: attempt 1 fails (DOWNLOAD_FAILED), attempt 2
    succeeds. `transcription jobs show` then reads `PROCESSING -> SUCCEEDED ...
    DOWNLOAD_FAILED (the media URL answered HTTP 503 ...)`."""

    async def scenario() -> list[dict[str, Any]]:
        url = await fault_run.template.fresh("stale_reason")
        stack = Stack(
            name="stale-reason",
            database_url=url,
            tenants=fault_run.tenants,
            model_server_url=fault_run.model_server_url,
            workdir=fault_run.workdir / "stale-reason",
            transcribers=1,
        )
        try:
            async with stack:
                (spec,) = plan_jobs(
                    1,
                    fault_run.tenants,
                    jfk_every=0,
                    behaviours={0: ("status503x1", "SUCCEEDED", None)},
                )
                sub = await stack.submit(spec)
                assert await stack.wait_settled(60) is not None
                rows = await stack.query(
                    "SELECT from_status, to_status, reason, detail FROM job_events "
                    "WHERE job_id = $1 ORDER BY id",
                    sub.job_id,
                )
                return [dict(r) for r in rows]
        finally:
            await drop(url)

    events = asyncio.run(scenario())
    assert [e["to_status"] for e in events][-1] == "SUCCEEDED"
    assert any(e["reason"] == "DOWNLOAD_FAILED" for e in events)  # attempt 1 did fail
    success = events[-1]
    assert (success["reason"], success["detail"]) == (None, None), success


@pytest.mark.model
def test_the_orchestrator_resumes_soon_after_the_database_returns(
    fault_run: RunContext,
) -> None:
    """The drill's database refuses connections for 9 s while a job runs and three wait.
    Rounds fail after about 0.3, 1.3, 3.3 and 7.3 s; the fourth failure sleeps 8 s, so
    the orchestrator's first round after the database is back comes about 6 s late (after
    a 30 s outage, up to 30 s late). With POLL_INTERVAL_SECONDS=0.5 it should come within
    a few seconds."""

    async def scenario() -> float:
        url = await fault_run.template.fresh("resume")
        stack = Stack(
            name="resume",
            database_url=url,
            tenants=fault_run.tenants,
            model_server_url=fault_run.model_server_url,
            workdir=fault_run.workdir / "resume",
            transcribers=1,
            env={"MAX_CONCURRENT_TRANSCRIPTION_JOBS": "1"},
        )
        try:
            async with stack:
                for spec in plan_jobs(4, fault_run.tenants, jfk_every=1):
                    await stack.submit(spec)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if await _count(stack, "TRIGGERED", "PROCESSING") >= 1:
                        break
                    await asyncio.sleep(0.1)
                await PostgresFault(url, None).outage(9)
                back = utcnow()
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:
                    rows = await stack.query(
                        "SELECT min(created_at) AS at FROM job_events "
                        "WHERE actor = 'orchestrator' AND created_at > $1",
                        back,
                    )
                    if rows[0]["at"] is not None:
                        return float((rows[0]["at"] - back).total_seconds())
                    await asyncio.sleep(0.2)
                return float("inf")
        finally:
            await drop(url)

    late = asyncio.run(scenario())
    assert late <= 3, f"the orchestrator's first round came {late:.1f} s after the database"


TRANSCRIPT = {
    "text": "x",
    "language": "en",
    "language_probability": 1.0,
    "duration": 1.0,
    "model": "tiny.en",
    "segments": [],
}


class _HangingPipeline:
    """Attempt after attempt, transcription waits for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.attempts: list[int] = []

    async def transcribe(self, job: Any, *_: Any) -> dict[str, Any]:
        self.attempts.append(job.attempts)
        await self.release.wait()
        return TRANSCRIPT


class _Receiver:
    async def send(self, *args: Any) -> Delivery:
        return Delivery(True, 200, None, "delivered", 0.0)


async def test_a_trigger_for_a_newer_attempt_of_a_running_job_is_not_dropped(
    pg_url: str,
) -> None:
    """Attempt 1 is still running on this replica when its lease runs out (its database
    connection was lost for longer than the lease, say); the orchestrator recovers the
    job, claims attempt 2 and the trigger comes back to the same replica (one replica, or
    the balancer's choice). The replica must either run attempt 2 or refuse it (503, so
    the orchestrator requeues it); answering 202 and doing nothing loses a lease period
    and an attempt."""
    engine = create_engine(pg_url, "faults-known-bugs")
    settings = TranscriberSettings(database_url=pg_url, lease_seconds=3, worker_max_jobs=4)
    pipeline = _HangingPipeline()
    worker = Worker(engine, pipeline, _Receiver(), settings)  # type: ignore[arg-type]
    try:
        async with engine.begin() as conn:
            await repo.create_tenant(conn, "org-lease")
            job = await repo.insert_job(
                conn,
                repo.NewJob(
                    tenant="org-lease",
                    media_url="https://m.example.com/a.mp3",
                    webhook_url="https://h.example.com/t",
                ),
            )
            (first,) = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=3)
        assert worker.accept(job.id, first.attempt)
        deadline = time.monotonic() + 10
        while pipeline.attempts != [1]:
            assert time.monotonic() < deadline, "attempt 1 did not start"
            await asyncio.sleep(0.05)

        # The lease of attempt 1 runs out; the orchestrator recovers and re-claims the job.
        async with engine.begin() as conn:
            await conn.execute(
                repo.jobs.update()
                .where(repo.jobs.c.id == job.id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            (lost,) = await repo.recover_expired_leases(
                conn, max_attempts=5, backoff_seconds=0, delivery_schedule=(1.0,)
            )
            assert lost.to_status == "FAILED"
            await conn.execute(
                repo.jobs.update()
                .where(repo.jobs.c.id == job.id)
                .values(due_at=utcnow() - timedelta(seconds=1))
            )
            (second,) = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=3)
        assert second.attempt == 2
        accepted = worker.accept(job.id, second.attempt)

        # Within less than a lease, attempt 2 must be PROCESSING here, or have been refused.
        status = None
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                row = await repo.get_job(conn, job.id)
            assert row is not None
            status = (row.status, row.attempts)
            if status[0] != "TRIGGERED":
                break
            await asyncio.sleep(0.1)
        assert not accepted or status == ("PROCESSING", 2), (
            f"trigger of attempt 2 answered 202, job still {status}"
        )
    finally:
        pipeline.release.set()
        await worker.drain(2)
        await engine.dispose()
