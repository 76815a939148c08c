"""Property: whatever happens to a job, in any order, it ends, its failure fields say what
it is now, and its history stays bounded.

Hypothesis draws a sequence of what can happen to one job: an attempt run by the real
worker (the pipeline returns a transcript, fails for any reason or raises; the webhook
is delivered, refused or raises), a worker lost (its lease expires, before or after the
attempt started), a refused trigger, and the client's or operator's cancel, redelivery
and requeue. The real repository on PostgreSQL carries it out. After every step:

* the job was triggered at most ``trigger_limit`` times since it last started, and the
  policy ends it without ever needing that hard stop;
* its failure fields match its status (set in a failure status, kept while a
  ``transcription.failed`` message is pending, cleared otherwise);
* it has at most three events per trigger, one per other action.

Then only attempts and lost workers follow, as drawn, until the bound: the job must be
terminal by then.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_tenant
from transcriber_service.errors import JobFailure
from transcriber_service.service import Worker
from transcriber_service.settings import TranscriberSettings
from transcriber_service.webhooks import Delivery
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.retry import trigger_limit
from transcription_core.status import TERMINAL, FailureReason, InvalidTransition, JobStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

S = JobStatus
POLICY: dict[str, Any] = {
    "max_attempts": 3,
    "retry_backoff_seconds": 0,
    "webhook_retry_schedule": "0,0,0",
    "lease_seconds": 60,
}
SCHEDULE = (0.0, 0.0, 0.0)
LIMIT = trigger_limit(3, SCHEDULE)
#: What the policy plans for, below the hard stop: it never needs the stop.
PLANNED = LIMIT - 2
TRANSCRIPT = {"text": "hello", "language": "en", "duration": 1.0, "segments": []}


class Boom(Exception):
    """An exception no code path expects."""


class Scripted:
    """The pipeline and the webhook sender, doing what the step drew; each checks the job
    as the API would show it while the attempt runs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.pipeline: str | FailureReason = "transcript"
        self.webhook = "delivered"
        self.raised = False
        self.job_id = ""

    async def check_in_flight(self) -> None:
        async with self.engine.connect() as conn:
            row = await repo.get_job(conn, self.job_id)
        assert row is not None and row.status == S.PROCESSING
        check_failure_fields(row)

    async def transcribe(self, job: Any, *_: Any) -> dict[str, Any]:
        await self.check_in_flight()
        if self.pipeline == "transcript":
            return TRANSCRIPT
        if self.pipeline == "exception":
            self.raised = True
            raise Boom("in the pipeline")
        assert isinstance(self.pipeline, FailureReason)
        raise JobFailure(self.pipeline, f"{self.pipeline.value} as drawn")

    async def send(self, url: str, secret: str, message_id: str, body: bytes) -> Delivery:
        await self.check_in_flight()
        if self.webhook == "exception":
            self.raised = True
            raise Boom("in the sender")
        if self.webhook == "failed":
            return Delivery(False, 503, None, "webhook receiver answered HTTP 503", 0.0)
        return Delivery(True, 200, None, "delivered", 0.0)


pipelines = st.one_of(
    st.just("transcript"), st.just("exception"), st.sampled_from(list(FailureReason))
)
webhooks = st.sampled_from(["delivered", "failed", "exception"])
attempts = st.one_of(
    st.tuples(st.just("run"), pipelines, webhooks),
    st.tuples(st.just("lost"), st.booleans()),  # True: after the attempt started
)
steps = st.one_of(
    attempts,
    st.tuples(st.just("refused")),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("redeliver")),
    st.tuples(st.just("requeue")),
)


def check_failure_fields(row: Any) -> None:
    status, reason, detail = row.status, row.failure_reason, row.failure_detail
    assert (reason is None) == (detail is None), (status, reason, detail)
    pending_failure_message = row.webhook_event == repo.FAILED_EVENT
    if status in (S.FAILED, S.PERMAFAILED):
        assert reason is not None, status
    elif status == S.SEND_FAILED:
        # Only a redelivered transcript waits in SEND_FAILED with nothing failed yet.
        redelivery = row.webhook_event == repo.SUCCEEDED_EVENT and row.deliveries == 0
        assert reason is not None or redelivery, (status, row.webhook_event)
    elif status in (S.SUCCEEDED, S.CANCELED):
        assert reason is None, (status, reason)
    else:  # QUEUED, TRIGGERED, PROCESSING
        assert reason is None or pending_failure_message, (status, reason, row.webhook_event)


class Driver:
    def __init__(self, engine: AsyncEngine, worker: Worker, scripted: Scripted, job_id: str):
        self.engine = engine
        self.worker = worker
        self.scripted = scripted
        self.job_id = job_id
        self.stopped: list[repo.StoppedJob] = []
        self.writes = 1  # the insert's event

    async def row(self) -> Any:
        async with self.engine.connect() as conn:
            return await repo.get_job(conn, self.job_id)

    async def claim(self) -> repo.ClaimedJob | None:
        async with self.engine.begin() as conn:
            claimed = await repo.claim_due_jobs(
                conn,
                max_in_flight=10,
                lease_seconds=60,
                max_triggers=LIMIT,
                stopped=self.stopped,
            )
        self.writes += 3 * len(claimed) + len(self.stopped)
        return claimed[0] if claimed else None

    async def step(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        self.scripted.raised = False
        if kind in ("run", "lost", "refused"):
            claimed = await self.claim()
            if claimed is None:
                return
            check_failure_fields(await self.row())  # TRIGGERED
            if kind == "run":
                self.scripted.pipeline, self.scripted.webhook = step[1], step[2]
                await self.worker.run_attempt(claimed.id, claimed.attempt)
            elif kind == "lost":
                await self.lose(claimed, started=step[1])
            else:
                async with self.engine.begin() as conn:
                    assert await repo.return_to_queue(conn, claimed, "transcriber answered 503")
            return
        async with self.engine.begin() as conn:
            job = await repo.get_job(conn, self.job_id)
            assert job is not None
            if kind == "cancel":
                try:
                    moved = await repo.cancel(conn, self.job_id, actor="client")
                except InvalidTransition:
                    moved = None
            elif kind == "redeliver" and job.status in (S.SUCCEEDED, S.PERMAFAILED):
                moved = await repo.request_redelivery(conn, job, "client")
            elif kind == "requeue" and job.status == S.PERMAFAILED:
                moved = job if await repo.requeue(conn, job, "operator") else None
            else:
                moved = None
        self.writes += moved is not None

    async def lose(self, claimed: repo.ClaimedJob, *, started: bool) -> None:
        """The worker is gone; its lease runs out and the orchestrator recovers the job."""
        async with self.engine.begin() as conn:
            if started:
                await repo.start(conn, claimed.id, claimed.attempt, 0, "worker")
            else:
                await conn.execute(
                    repo.jobs.update()
                    .where(repo.jobs.c.id == claimed.id)
                    .values(lease_expires_at=utcnow())
                )
            recovered = await repo.recover_expired_leases(
                conn, max_attempts=3, backoff_seconds=0, delivery_schedule=SCHEDULE
            )
        assert [r.id for r in recovered] == [claimed.id]

    async def check(self) -> Any:
        row = await self.row()
        async with self.engine.connect() as conn:
            triggers = (await repo.triggers_since_start(conn, [row]))[row.id]
            events = await repo.job_events(conn, self.job_id)
        assert row.status not in (S.TRIGGERED, S.PROCESSING), "an attempt left in flight"
        assert triggers <= PLANNED, f"{triggers} triggers since the job last started"
        assert self.stopped == [], "the policy needed the hard stop"
        check_failure_fields(row)
        assert len(events) <= self.writes, (len(events), self.writes)
        return row


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(prefix=st.lists(steps, max_size=20), data=st.data())
async def test_every_job_ends_with_consistent_failure_fields(
    pg_url: str, pg_engine: AsyncEngine, prefix: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    async with pg_engine.begin() as conn:
        await conn.execute(repo.jobs.delete())  # the last example's job (events cascade)
        await conn.execute(repo.tenants.delete())
    await make_tenant(pg_engine)
    async with pg_engine.begin() as conn:
        job = await repo.insert_job(
            conn,
            repo.NewJob(
                tenant="org-test",
                media_url="https://media.example.com/a.mp3",
                webhook_url="https://hooks.example.com/t",
            ),
        )
    scripted = Scripted(pg_engine)
    worker = Worker(
        pg_engine,
        scripted,  # type: ignore[arg-type]
        scripted,  # type: ignore[arg-type]
        TranscriberSettings(database_url=pg_url, **POLICY),
    )
    driver = Driver(pg_engine, worker, scripted, job.id)
    scripted.job_id = job.id
    for step in prefix:
        before = len(await _events(pg_engine, job.id))
        await driver.step(step)
        await driver.check()
        if step[0] == "run" and scripted.raised:  # a recorded failure naming the type
            new = (await _events(pg_engine, job.id))[before:]
            assert any("Boom" in (e.detail or "") for e in new), new
    # Then only attempts and lost workers: the job ends within the bound.
    for _ in range(LIMIT + 1):
        row = await driver.check()
        if row.status in TERMINAL:
            break
        await driver.step(data.draw(attempts))
    row = await driver.check()
    assert row.status in TERMINAL, (row.status, row.attempts)


async def _events(engine: AsyncEngine, job_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return await repo.job_events(conn, job_id)
