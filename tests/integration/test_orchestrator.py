"""The orchestrator against a recording transcriber on loopback (the real worker's
trigger endpoint is tested with the worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from factories import make_job, make_jobs, make_replica, make_tenant, status_of
from orchestrator_service.app import create_app
from orchestrator_service.clients import TranscriberClient
from orchestrator_service.service import Orchestrator
from orchestrator_service.settings import OrchestratorSettings
from testkit.asgi import serve_app, wait_for
from transcription_cli.main import main as cli
from transcription_core import repository as repo
from transcription_core.status import JobStatus


@dataclass
class Recorder:
    """A stand-in transcriber: records every trigger and answers ``status``."""

    url: str = ""
    status: int = 202
    triggers: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = FastAPI()

    @app.post("/v1/triggers")
    async def trigger(request: Request) -> Response:
        body = await request.json()
        rec.triggers.append((body["job_id"], body["attempt"]))
        return Response(status_code=rec.status)

    async with serve_app(app) as url:
        rec.url = url
        yield rec


def settings_for(
    database_url: str, recorder: Recorder, **overrides: object
) -> OrchestratorSettings:
    values: dict[str, object] = {
        "database_url": database_url,
        "transcriber_url": recorder.url,
        "max_concurrent_transcription_jobs": 5,
        "retry_backoff_seconds": 0,
    }
    values.update(overrides)
    return OrchestratorSettings(**values)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def test_a_round_triggers_due_jobs_up_to_the_limit(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    ids = await make_jobs(engine, 7)
    settings = settings_for(database_url, recorder)
    orchestrator = Orchestrator(engine, TranscriberClient(http), settings)
    accepted = await orchestrator.run_round()
    assert len(accepted) == 5
    assert sorted(recorder.triggers) == sorted((j.id, 1) for j in accepted)
    assert set(recorder.triggers) <= {(i, 1) for i in ids}
    assert await orchestrator.run_round() == []  # the limit is reached


async def test_a_refused_trigger_puts_the_job_back_uncounted(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    (job_id,) = await make_jobs(engine, 1)
    recorder.status = 503
    orchestrator = Orchestrator(
        engine, TranscriberClient(http), settings_for(database_url, recorder)
    )
    assert await orchestrator.run_round() == []
    async with engine.connect() as conn:
        job = await repo.get_job(conn, job_id)
        events = await repo.job_events(conn, job_id)
    assert job is not None and (job.status, job.attempts) == ("QUEUED", 0)
    assert events[-1].from_status == "TRIGGERED" and "503" in events[-1].detail


async def test_an_unreachable_transcriber_puts_the_job_back(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    await make_tenant(engine)
    (job_id,) = await make_jobs(engine, 1)
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    await make_replica(engine, dead)
    settings = settings_for(database_url, recorder)
    orchestrator = Orchestrator(engine, TranscriberClient(http), settings)
    assert await orchestrator.run_round() == []
    assert await status_of(engine, job_id) == "QUEUED"


async def test_a_lost_worker_is_retried_then_permafailed(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    """The recorder takes triggers and never works: each lease expires."""
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    (job_id,) = await make_jobs(engine, 1)
    settings = settings_for(
        database_url, recorder, lease_seconds=0.05, max_attempts=3, webhook_retry_schedule="0"
    )
    orchestrator = Orchestrator(engine, TranscriberClient(http), settings)

    async def done() -> bool:
        await make_replica(engine, recorder.url)  # it reports, well within its lease
        await orchestrator.run_round()
        return await status_of(engine, job_id) == "PERMAFAILED"

    await wait_for(done, timeout=30, interval=0.06)
    # Three transcription attempts, then two tries to deliver the failure message.
    assert recorder.triggers == [(job_id, n) for n in range(1, 6)]
    async with engine.connect() as conn:
        job = await repo.get_job(conn, job_id)
    assert job is not None and job.failure_reason == "WORKER_LOST"


async def test_the_limit_changes_at_run_time_without_a_restart(
    engine: AsyncEngine,
    database_url: str,
    recorder: Recorder,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    await make_jobs(engine, 6)
    orchestrator = Orchestrator(
        engine, TranscriberClient(http), settings_for(database_url, recorder)
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await asyncio.to_thread(cli, ["limit", "set", "2", "--actor", "alice"]) == 0
    assert len(await orchestrator.run_round()) == 2
    assert await asyncio.to_thread(cli, ["limit", "set", "4"]) == 0
    assert len(await orchestrator.run_round()) == 2  # 2 more: 4 in flight
    assert await asyncio.to_thread(cli, ["limit", "reset"]) == 0
    assert len(await orchestrator.run_round()) == 1  # the configured 5
    async with engine.connect() as conn:
        assert await repo.count_in_flight(conn) == 5
    capsys.readouterr()


@pytest.mark.postgres
async def test_the_service_wakes_on_notify_not_on_its_poll(
    pg_engine: AsyncEngine, pg_url: str, recorder: Recorder
) -> None:
    """With a 60 s poll, only LISTEN/NOTIFY can deliver the trigger within 10 s."""
    await make_tenant(pg_engine)
    await make_replica(pg_engine, recorder.url)
    settings = settings_for(pg_url, recorder, poll_interval_seconds=60)
    async with serve_app(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        await wait_for(lambda: recorder_ready(http), timeout=10)
        job = await make_job(pg_engine)
        async with pg_engine.begin() as conn:
            await repo.notify_new_jobs(conn)  # what the enqueue service does after commit
        await wait_for(lambda: (job.id, 1) in recorder.triggers, timeout=10)
        metrics = (await http.get("/metrics")).text
    assert "transcription_queue_depth" in metrics
    assert 'transcription_triggers_total{outcome="accepted"}' in metrics


async def recorder_ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_the_service_polls_on_sqlite(sqlite_url: str, recorder: Recorder) -> None:
    from transcription_core.db import create_engine

    engine = create_engine(sqlite_url, "test")
    try:
        await make_tenant(engine)
        await make_replica(engine, recorder.url)
        settings = settings_for(sqlite_url, recorder, poll_interval_seconds=0.1)
        async with serve_app(create_app(settings)):
            job = await make_job(engine)
            await wait_for(lambda: (job.id, 1) in recorder.triggers, timeout=10)
        assert await status_of(engine, job.id) == JobStatus.TRIGGERED
    finally:
        await engine.dispose()


async def test_at_the_limit_it_waits_for_a_slot_instead_of_running_round_after_round(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    """Jobs due and every in-flight slot taken: nothing can be claimed until a slot frees
    up, which notifies (or the poll interval passes). The next round used to run at once,
    because the oldest due job was due "now": hundreds of empty rounds a second while a
    backlog waited."""
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    await make_jobs(engine, 3)
    settings = settings_for(
        database_url, recorder, max_concurrent_transcription_jobs=1, poll_interval_seconds=2
    )
    orchestrator = Orchestrator(engine, TranscriberClient(http), settings)
    assert len(await orchestrator.run_round()) == 1
    assert orchestrator._sleep_seconds() == 2
    assert await orchestrator.run_round() == []
    assert orchestrator._sleep_seconds() == 2


async def test_a_freed_slot_calls_for_a_round_only_while_jobs_wait_for_room(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    """A finished job wakes the orchestrator twice (its status leaving flight, its
    replica's freed slot). The second is worth a round only if due jobs were left waiting
    for room; otherwise it is skipped, and any other notification still calls for one."""
    await make_tenant(engine)
    await make_replica(engine, recorder.url)
    settings = settings_for(database_url, recorder, max_concurrent_transcription_jobs=1)
    orchestrator = Orchestrator(engine, TranscriberClient(http), settings)
    assert await orchestrator.run_round() == []
    orchestrator._work_notified = False  # what run_forever does as a round begins
    orchestrator.wake(repo.SLOT_FREED)
    assert not orchestrator._round_needed()
    orchestrator.wake()
    assert orchestrator._round_needed()

    await make_jobs(engine, 2)
    assert len(await orchestrator.run_round()) == 1  # the other waits for the limit
    orchestrator._work_notified = False
    orchestrator.wake(repo.SLOT_FREED)
    assert orchestrator._round_needed()


async def test_a_round_takes_few_transactions(
    engine: AsyncEngine, database_url: str, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    """The limit, the replicas' rows and (with no room) the next due time are read in
    one transaction, and the claim reads the next due time in its own: a round is two
    transactions, one when the fleet has no room (they were four and three)."""
    from sqlalchemy import event

    await make_tenant(engine)
    await make_replica(engine, recorder.url, slots=2)
    orchestrator = Orchestrator(
        engine, TranscriberClient(http), settings_for(database_url, recorder)
    )
    await orchestrator.run_round()  # recovery and gauges run on their own clocks
    orchestrator._recovery_every = orchestrator._gauge_every = float("inf")
    begins: list[object] = []

    def count(conn: object) -> None:
        begins.append(conn)

    event.listen(engine.sync_engine, "begin", count)
    try:
        await make_jobs(engine, 1)
        begins.clear()
        assert len(await orchestrator.run_round()) == 1
        assert len(begins) == 2
        await make_replica(engine, recorder.url, slots=2, running=2, version=9)
        begins.clear()
        assert await orchestrator.run_round() == []
        assert len(begins) == 1
    finally:
        event.remove(engine.sync_engine, "begin", count)


@pytest.mark.postgres
async def test_the_listener_passes_each_notifications_payload(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    from orchestrator_service.listener import listen_forever

    heard: list[str] = []
    task = asyncio.create_task(listen_forever(pg_url, heard.append))
    try:
        await wait_for(lambda: heard)  # "" at once: whatever was queued meanwhile
        async with pg_engine.begin() as conn:
            await repo.notify_slot_freed(conn)
        async with pg_engine.begin() as conn:
            await repo.notify_new_jobs(conn)
        await wait_for(lambda: len(heard) >= 3)
        assert heard == ["", repo.SLOT_FREED, ""]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.postgres
async def test_a_job_leaving_flight_for_good_notifies_a_freed_slot(
    pg_engine: AsyncEngine, pg_url: str
) -> None:
    """The jobs table's trigger: back in the queue is work (empty payload), done is only
    a freed slot (``SLOT_FREED``), which the orchestrator may skip."""
    import sqlalchemy as sa

    from orchestrator_service.listener import listen_forever

    await make_tenant(pg_engine)
    done, back = (await make_job(pg_engine)).id, (await make_job(pg_engine)).id
    heard: list[str] = []
    task = asyncio.create_task(listen_forever(pg_url, heard.append))

    async def move(job_id: str, status: str) -> None:
        async with pg_engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE jobs SET status = :status WHERE id = :id"),
                {"status": status, "id": job_id},
            )

    try:
        await wait_for(lambda: heard)
        for job_id in (done, back):
            await move(job_id, "TRIGGERED")  # its claim: no notification
        await move(done, "SUCCEEDED")
        await move(back, "QUEUED")
        await wait_for(lambda: len(heard) >= 3)
        assert heard == ["", repo.SLOT_FREED, ""]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
