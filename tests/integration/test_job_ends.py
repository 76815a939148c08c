"""Every job ends: whatever goes wrong, a job is triggered a bounded number of times, then
rests in a terminal status with its reason.

The real orchestrator's rounds and the real worker on PostgreSQL: the orchestrator's
trigger runs the worker's attempt in place (no HTTP in between), so a test steps round
by round and counts what each job went through.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_replica, make_tenant
from orchestrator_service.clients import TriggerResult
from orchestrator_service.service import Orchestrator
from orchestrator_service.settings import OrchestratorSettings
from testkit.webhook_receiver import WebhookReceiver
from transcriber_service.errors import JobFailure
from transcriber_service.service import Worker
from transcriber_service.settings import TranscriberSettings
from transcriber_service.webhooks import WebhookSender
from transcription_core import repository as repo
from transcription_core.job import Job
from transcription_core.models import utcnow
from transcription_core.retry import trigger_limit
from transcription_core.status import TERMINAL, FailureReason, JobStatus

pytestmark = pytest.mark.postgres

S = JobStatus
TRANSCRIPT = {"text": "hello", "language": "en", "duration": 1.0, "segments": []}
POLICY: dict[str, Any] = {
    "max_attempts": 3,
    "retry_backoff_seconds": 0,
    "webhook_retry_schedule": "0,0,0",
    "lease_seconds": 60,
}
LIMIT = trigger_limit(3, (0.0, 0.0, 0.0))
#: Each trigger writes at most three events (TRIGGERED, PROCESSING, where it ended).
MAX_EVENTS = 1 + 3 * LIMIT
FULLWIDTH_LOCALHOST = "".join(chr(ord(c) + 0xFEE0) for c in "localhost")


class Scripted:
    """A pipeline that answers each attempt with the next of ``results`` (then the last)."""

    def __init__(self, *results: dict[str, Any] | BaseException) -> None:
        self.results = list(results)
        self.calls = 0

    async def transcribe(self, job: Any, *_: Any) -> dict[str, Any]:
        self.calls += 1
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, BaseException):
            raise result
        return result


class InPlace:
    """The orchestrator's transcriber client, running each attempt before it answers."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def trigger(self, url: str, job_id: str, attempt: int) -> TriggerResult:
        await self.worker.run_attempt(job_id, attempt)
        return TriggerResult(True, "accepted")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def scripted_worker(
    engine: AsyncEngine,
    pg_url: str,
    pipeline: Scripted,
    http: httpx.AsyncClient,
    *,
    allow_private: bool = True,
    kind: type[Worker] = Worker,
) -> Worker:
    """A worker (of ``kind``) running ``pipeline``, with this file's retry policy."""
    return kind(
        engine,
        pipeline,  # type: ignore[arg-type]
        WebhookSender(http, timeout=5, allow_private=allow_private),
        TranscriberSettings(database_url=pg_url, allow_private_urls=allow_private, **POLICY),
    )


async def run_to_rest(
    engine: AsyncEngine,
    pg_url: str,
    pipeline: Scripted,
    http: httpx.AsyncClient,
    *,
    allow_private: bool = True,
    rounds: int = 4 * LIMIT,
) -> tuple[Any, list[Any]]:
    """Rounds until the one job is terminal (or ``rounds`` ran); its row and events."""
    worker = scripted_worker(engine, pg_url, pipeline, http, allow_private=allow_private)
    orchestrator = Orchestrator(
        engine,
        InPlace(worker),  # type: ignore[arg-type]
        OrchestratorSettings(database_url=pg_url, **POLICY),
    )
    for _ in range(rounds):
        await orchestrator.run_round()
        async with engine.connect() as conn:
            (row,) = [Job.from_row(r) for r in (await conn.execute(repo.jobs.select())).mappings()]
        if row.status in TERMINAL:
            break
    async with engine.connect() as conn:
        events = await repo.job_events(conn, row.id)
    return row, events


def assert_rests(row: Any, events: list[Any], reason: str, *words: str) -> None:
    assert row.status == S.PERMAFAILED, (row.status, row.attempts, row.failure_detail)
    assert row.failure_reason == reason
    for word in words:
        assert word in row.failure_detail, row.failure_detail
    assert row.attempts <= LIMIT and len(events) <= MAX_EVENTS


WEBHOOKS_THAT_RAISE = [
    # Each one raised in the delivery before the URL guard learnt to refuse hosts that no
    # resolver takes (getaddrinfo's IDNA codec: UnicodeError; httpx: InvalidURL, not an
    # httpx.HTTPError). Now the guard refuses them, even with private URLs allowed, and
    # the sender reports it: either way, a failed delivery, never a new attempt.
    ("http://" + "a" * 64 + ".example/hook", False, "webhook URL refused"),
    (f"http://{FULLWIDTH_LOCALHOST}:9/hook", True, "webhook URL refused"),
    ("http://local\thost:9/hook", True, "webhook URL refused"),
]


@pytest.mark.parametrize(
    ("webhook_url", "allow_private", "error"),
    WEBHOOKS_THAT_RAISE,
    ids=["label-over-63", "fullwidth-host", "tab-in-host"],
)
@pytest.mark.parametrize("message", ["succeeded", "failed"])
async def test_a_webhook_url_that_raises_ends_the_job(
    pg_url: str,
    pg_engine: AsyncEngine,
    http: httpx.AsyncClient,
    webhook_url: str,
    allow_private: bool,
    error: str,
    message: str,
) -> None:
    """The loop of issue 10: each delivery to such a URL raised, ended the attempt as
    WORKER_LOST, and once out of attempts the job went back to SEND_FAILED with its
    deliveries reset, due at once, forever. The job was inserted directly: the enqueue
    API refuses such URLs."""
    await make_tenant(pg_engine)
    await make_replica(pg_engine)
    await make_job(pg_engine, webhook_url=webhook_url)
    if message == "succeeded":
        pipeline = Scripted(TRANSCRIPT)
        reason = FailureReason.WEBHOOK_FAILED
    else:
        pipeline = Scripted(JobFailure(FailureReason.MEDIA_UNDECODABLE, "not media"))
        reason = FailureReason.MEDIA_UNDECODABLE
    row, events = await run_to_rest(pg_engine, pg_url, pipeline, http, allow_private=allow_private)
    assert_rests(row, events, reason)
    if message == "succeeded":
        assert error in row.failure_detail
    else:  # the job keeps the failure the client was to hear about; the log says why not
        assert row.failure_detail == "not media"
        assert error in events[-1].detail
    assert pipeline.calls == 1


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("message", ["succeeded", "failed"])
async def test_a_message_that_cannot_be_built_is_a_failed_delivery(
    pg_url: str, pg_engine: AsyncEngine, http: httpx.AsyncClient, message: str
) -> None:
    """Metadata stored 300 levels deep (before the enqueue refused it) cannot be
    serialised into a message: each try is a failed delivery, on the webhook schedule,
    never a transcription attempt that starts the delivery count again."""
    async with WebhookReceiver() as receiver:
        await make_tenant(pg_engine)
        await make_replica(pg_engine)
        await make_job(pg_engine, webhook_url=receiver.hook_url(), metadata=nested(300))
        if message == "succeeded":
            pipeline = Scripted(TRANSCRIPT)
            reason = FailureReason.WEBHOOK_FAILED
        else:
            pipeline = Scripted(JobFailure(FailureReason.NO_AUDIO_FOUND, "no speech"))
            reason = FailureReason.NO_AUDIO_FOUND
        row, events = await run_to_rest(pg_engine, pg_url, pipeline, http)
    assert_rests(row, events, reason)
    assert (row.deliveries, pipeline.calls, receiver.deliveries) == (4, 1, [])
    assert "ValueError" in events[-1].detail


async def test_an_unexpected_exception_while_transcribing_is_a_recorded_failure(
    pg_url: str, pg_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    async with WebhookReceiver() as receiver:
        await make_tenant(pg_engine)
        await make_replica(pg_engine)
        await make_job(pg_engine, webhook_url=receiver.hook_url())
        pipeline = Scripted(KeyError("segments"))
        row, events = await run_to_rest(pg_engine, pg_url, pipeline, http)
    assert_rests(row, events, FailureReason.WORKER_LOST, "KeyError", "segments")
    assert pipeline.calls == 3  # MAX_ATTEMPTS, then the client hears of it
    (delivery,) = receiver.deliveries
    assert b'"failure_reason":"WORKER_LOST"' in delivery.body and b"KeyError" in delivery.body


class Recording:
    """The orchestrator's transcriber client, recording triggers and running nothing."""

    def __init__(self) -> None:
        self.triggers: list[tuple[str, int]] = []

    async def trigger(self, url: str, job_id: str, attempt: int) -> TriggerResult:
        self.triggers.append((job_id, attempt))
        return TriggerResult(True, "accepted")


def stopped_so_far() -> float:
    return REGISTRY.get_sample_value("transcription_jobs_stopped_total") or 0.0


@pytest.mark.parametrize(
    ("status", "reason", "event"),
    [
        (S.SEND_FAILED, FailureReason.WEBHOOK_FAILED, repo.SUCCEEDED_EVENT),
        (S.SEND_FAILED, FailureReason.MODEL_ERROR, repo.FAILED_EVENT),
        (S.FAILED, FailureReason.DOWNLOAD_FAILED, None),
        (S.QUEUED, None, None),  # a delivery retry whose trigger was refused
    ],
)
async def test_a_job_at_its_trigger_limit_is_stopped_not_triggered(
    pg_url: str, pg_engine: AsyncEngine, status: JobStatus, reason: str | None, event: str | None
) -> None:
    """However it got there, a job triggered LIMIT times is not triggered again: it rests
    PERMAFAILED with the reason it had (WORKER_LOST if none), and the orchestrator
    counts it (an alert watches that counter)."""
    await make_tenant(pg_engine)
    await make_replica(pg_engine)
    job = await make_job(
        pg_engine,
        status=status,
        attempts=LIMIT,
        failure_reason=reason,
        failure_detail=None if reason is None else "what went wrong",
        webhook_event=event,
        deliveries=1 if event else 0,
    )
    client = Recording()
    orchestrator = Orchestrator(
        pg_engine,
        client,  # type: ignore[arg-type]
        OrchestratorSettings(database_url=pg_url, **POLICY),
    )
    before = stopped_so_far()
    await orchestrator.run_round()
    assert client.triggers == []
    assert stopped_so_far() == before + 1
    async with pg_engine.connect() as conn:
        row = await repo.get_job(conn, job.id)
        events = await repo.job_events(conn, job.id)
    assert row is not None
    assert (row.status, row.attempts) == (S.PERMAFAILED, LIMIT)
    assert row.failure_reason == (reason or FailureReason.WORKER_LOST)
    assert row.completed_at is not None and row.lease_expires_at is None
    assert f"{LIMIT} triggers" in row.failure_detail
    if reason is not None:
        assert "what went wrong" in row.failure_detail
    assert [(e.from_status, e.to_status) for e in events][-1] == (status, S.PERMAFAILED)


@pytest.mark.parametrize("finished", [S.SUCCEEDED, S.PERMAFAILED])
async def test_a_redelivery_or_a_requeue_starts_the_count_again(
    pg_url: str, pg_engine: AsyncEngine, finished: JobStatus
) -> None:
    """The limit counts triggers since the job last left a terminal status (a client's
    redelivery, an operator's requeue), not since it was enqueued."""
    await make_tenant(pg_engine)
    await make_replica(pg_engine)
    job = await make_job(
        pg_engine,
        status=finished,
        attempts=LIMIT,
        failure_reason=FailureReason.WEBHOOK_FAILED if finished == S.PERMAFAILED else None,
        webhook_event=repo.SUCCEEDED_EVENT,
        webhook_message_id="msg_1",
    )
    client = Recording()
    orchestrator = Orchestrator(
        pg_engine,
        client,  # type: ignore[arg-type]
        OrchestratorSettings(database_url=pg_url, **POLICY),
    )
    async with pg_engine.begin() as conn:
        await repo.save_transcript(conn, job.id, TRANSCRIPT)
        assert await repo.request_redelivery(conn, job, "client")
    await orchestrator.run_round()
    assert client.triggers == [(job.id, LIMIT + 1)]
    if finished == S.PERMAFAILED:  # an operator's requeue: attempts start from 0
        async with pg_engine.begin() as conn:
            await conn.execute(
                repo.jobs.update()
                .where(repo.jobs.c.id == job.id)
                .values(status=S.PERMAFAILED, attempts=2 * LIMIT)
            )
            row = await repo.get_job(conn, job.id)
            assert row is not None and await repo.requeue(conn, row, "operator")
        await orchestrator.run_round()
        assert client.triggers[-1] == (job.id, 1)


async def test_a_success_after_a_failed_attempt_carries_no_old_failure(
    pg_url: str, pg_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """Attempt 1 fails with DOWNLOAD_FAILED, attempt 2 succeeds: the job as GET shows it
    while attempt 2 runs, the webhook it gets, and the stored payload all say no failure."""
    seen_while_retrying: list[tuple[str, Any, Any]] = []

    class FailsOnce(Scripted):
        async def transcribe(self, job: Any, *_: Any) -> dict[str, Any]:
            if self.calls:
                async with pg_engine.connect() as conn:
                    row = await repo.get_job(conn, job.id)
                assert row is not None
                seen_while_retrying.append((row.status, row.failure_reason, row.failure_detail))
            return await super().transcribe(job)

    async with WebhookReceiver() as receiver:
        await make_tenant(pg_engine)
        await make_replica(pg_engine)
        await make_job(pg_engine, webhook_url=receiver.hook_url())
        pipeline = FailsOnce(
            JobFailure(FailureReason.DOWNLOAD_FAILED, "the media URL answered HTTP 503"),
            TRANSCRIPT,
        )
        row, events = await run_to_rest(pg_engine, pg_url, pipeline, http)
    assert [e.reason for e in events if e.to_status == S.FAILED] == ["DOWNLOAD_FAILED"]
    assert seen_while_retrying == [(S.PROCESSING, None, None)]
    assert (row.status, row.failure_reason, row.failure_detail) == (
        S.SUCCEEDED,
        None,
        None,
    )
    (delivery,) = receiver.deliveries
    for body in (delivery.body, row.webhook_payload.encode()):
        data = json.loads(body)["data"]
        assert (data["status"], data["failure_reason"], data["failure_detail"]) == (
            "SUCCEEDED",
            None,
            None,
        )


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_the_orchestrator_exports_the_most_triggers_of_an_unfinished_job(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """What the alert compares with the limit: the most triggers any job not yet finished
    had since it last started. Only a path around the claim's check can push it past the
    limit (a job PROCESSING at LIMIT + 5 here, as an old orchestrator could leave it)."""
    await make_tenant(pg_engine)
    await make_replica(pg_engine)
    later = {"due_at": utcnow() + timedelta(hours=1)}
    await make_job(pg_engine, status=S.FAILED, attempts=3, **later)
    await make_job(pg_engine, status=S.SUCCEEDED, attempts=LIMIT + 40)  # finished: not counted
    redelivered = await make_job(
        pg_engine, status=S.SUCCEEDED, attempts=LIMIT + 20, webhook_event=repo.SUCCEEDED_EVENT
    )
    async with pg_engine.begin() as conn:  # a redelivery starts the count again
        moved = await repo.request_redelivery(conn, redelivered, "client")
        assert moved is not None
        await conn.execute(
            repo.jobs.update()
            .where(repo.jobs.c.id == moved.id)
            .values(attempts=LIMIT + 24, **later)
        )
    orchestrator = Orchestrator(
        pg_engine,
        Recording(),  # type: ignore[arg-type]
        OrchestratorSettings(database_url=pg_url, **POLICY),
    )
    await orchestrator.run_round()
    assert gauge("transcription_job_trigger_limit") == LIMIT
    assert gauge("transcription_job_most_triggers") == 4
    await make_job(
        pg_engine, status=S.PROCESSING, attempts=LIMIT + 5, lease_expires_at=later["due_at"]
    )
    orchestrator._last_gauges = -math.inf
    await orchestrator.run_round()
    assert gauge("transcription_job_most_triggers") == LIMIT + 5


async def test_a_successful_attempt_takes_three_transactions(
    pg_url: str, pg_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """The start (with what earlier attempts saved), the message with the new transcript,
    the end (a pipeline that saves no chunk): each transaction is CPU on both sides, per
    job."""
    from sqlalchemy import event

    async with WebhookReceiver() as receiver:
        await make_tenant(pg_engine)
        await make_replica(pg_engine)
        job = await make_job(pg_engine, webhook_url=receiver.hook_url())
        worker = scripted_worker(pg_engine, pg_url, Scripted(TRANSCRIPT), http)
        orchestrator = Orchestrator(
            pg_engine,
            InPlace(worker),  # type: ignore[arg-type]
            OrchestratorSettings(database_url=pg_url, **POLICY),
        )
        begins: list[object] = []

        def count(conn: object) -> None:
            begins.append(conn)

        async def counted(url: str, job_id: str, attempt: int) -> TriggerResult:
            event.listen(pg_engine.sync_engine, "begin", count)
            try:
                await worker.run_attempt(job_id, attempt)
            finally:
                event.remove(pg_engine.sync_engine, "begin", count)
            return TriggerResult(True, "accepted")

        orchestrator.transcriber.trigger = counted  # type: ignore[method-assign]
        await orchestrator.run_round()
    async with pg_engine.connect() as conn:
        row = await repo.get_job(conn, job.id)
    assert row is not None and row.status == S.SUCCEEDED
    assert len(begins) == 3


async def test_a_stopping_worker_waits_for_an_attempts_last_write(
    pg_url: str, pg_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """A replica told to stop while an attempt writes its end: the write is shielded
    from the drain's cancel, but the drain did not wait for it, so the app closed the
    engine under it and the process exited (the job then waited out its lease and ran
    again). The drain now waits for the attempts' last writes."""
    writing = asyncio.Event()

    class SlowLastWrite(Worker):
        async def _finish(self, change: Any) -> None:
            writing.set()
            await asyncio.sleep(0.5)
            await super()._finish(change)

    async with WebhookReceiver() as receiver:
        await make_tenant(pg_engine)
        await make_replica(pg_engine)
        job = await make_job(pg_engine, webhook_url=receiver.hook_url())
        worker = scripted_worker(pg_engine, pg_url, Scripted(TRANSCRIPT), http, kind=SlowLastWrite)
        async with pg_engine.begin() as conn:
            (claimed,) = await repo.claim_due_jobs(conn, max_in_flight=10, lease_seconds=60)
        assert worker.accept(job.id, claimed.attempt)
        await writing.wait()
        await worker.drain(0)
        async with pg_engine.connect() as conn:
            row = await repo.get_job(conn, job.id)
    assert row is not None and row.status == S.SUCCEEDED, row
