"""What a transcriber replica says of its capacity: ``GET /v1/capacity`` (its job slots and
whether the model tier behind it is full, the same facts as the ``transcription_model_*``
metrics), its row in ``transcriber_replicas`` and its answers to triggers, which the
orchestrator dispatches by."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from testkit.asgi import serve_app, wait_for
from transcriber_service.app import create_app
from transcriber_service.settings import TranscriberSettings
from transcription_core.repository import replicas
from transcription_core.repository.replicas import ReplicaState


async def test_capacity_reports_the_slots_and_a_saturated_model_tier(pg_url: str) -> None:
    settings = TranscriberSettings(database_url=pg_url, worker_max_jobs=2, chunk_concurrency=4)
    app = create_app(settings)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        idle = (await http.get("/v1/capacity")).json()
        assert idle == {
            "jobs": {"running": 0, "max": 2},
            "model": {"window": 8, "maximum": 8, "in_flight": 0, "saturated": False},
        }
        capacity = app.state.model_capacity
        held = [await capacity.acquire() for _ in range(6)]
        capacity.queue_full(held.pop())  # the model tier said "queue full" with 6 chunks out
        busy = (await http.get("/v1/capacity")).json()
        assert busy["model"] == {"window": 3, "maximum": 8, "in_flight": 5, "saturated": True}
        metrics = (await http.get("/metrics")).text
        assert "transcription_model_saturated 1.0" in metrics
        assert "transcription_model_window 3.0" in metrics
        for slot in held:
            capacity.release(slot)


async def _row(engine: AsyncEngine) -> ReplicaState | None:
    async with engine.connect() as conn:
        rows = await replicas.live(conn, ttl_seconds=60)
    return rows[0] if rows else None


async def test_the_replica_reports_what_it_runs_in_its_row_and_its_answers(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """The row follows every job started or ended and the shutdown; each trigger's answer
    says the same, with the version that orders it against the row."""
    settings = TranscriberSettings(
        database_url=pg_url,
        worker_max_jobs=2,
        advertise_url="http://replica.example:8080",
        shutdown_grace_seconds=0.2,
    )
    app = create_app(settings)
    release = asyncio.Event()
    seen_while_stopping: list[ReplicaState | None] = []

    async def hold(job_id: str, attempt: int) -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:  # the shutdown's grace ran out
            seen_while_stopping.append(await _row(pg_engine))
            raise

    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        app.state.worker.run_attempt = hold
        row = await wait_for(lambda: _row(pg_engine))
        assert (row.url, row.slots, row.running, row.accepting, row.version) == (
            "http://replica.example:8080",
            2,
            0,
            True,
            0,
        )
        answers = [
            await http.post("/v1/triggers", json={"job_id": f"j{i}", "attempt": 1})
            for i in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 202, 503]
        assert answers[1].json() == {
            "replica": row.id,
            "slots": 2,
            "running": 2,
            "accepting": True,
            "model_saturated": False,
            "version": 2,
        }
        assert answers[2].json()["running"] == 2 and answers[2].headers["Retry-After"] == "1"

        async def full() -> bool:
            now = await _row(pg_engine)
            return now is not None and (now.running, now.version) == (2, 2)

        await wait_for(full)
        release.set()

        async def idle() -> bool:
            now = await _row(pg_engine)
            return now is not None and (now.running, now.version) == (0, 4)

        await wait_for(idle)
        release.clear()
        await http.post("/v1/triggers", json={"job_id": "last", "attempt": 1})
        await wait_for(lambda: app.state.worker.active)
    # The server stopped: the worker drained (the row said it took nothing more), then
    # the row was deleted.
    (stopping,) = seen_while_stopping
    assert stopping is not None and (stopping.accepting, stopping.running) == (False, 1)
    assert await _row(pg_engine) is None


async def test_a_freed_slot_notifies_with_its_row_committed(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """When a job ends, the replica's row and its "slot freed" NOTIFY (payload
    ``SLOT_FREED``, which the orchestrator tells from work arriving) are one transaction:
    the row the notification announces is committed when it arrives."""
    import asyncpg

    from transcription_core.db import asyncpg_dsn
    from transcription_core.repository import NOTIFY_CHANNEL, SLOT_FREED

    settings = TranscriberSettings(database_url=pg_url, worker_max_jobs=2)
    app = create_app(settings)
    release = asyncio.Event()
    heard: list[tuple[str, int | None]] = []
    listener = await asyncpg.connect(asyncpg_dsn(pg_url))
    checker = await asyncpg.connect(asyncpg_dsn(pg_url))

    async def hold(job_id: str, attempt: int) -> None:
        await release.wait()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        async def record() -> None:
            heard.append(
                (payload, await checker.fetchval("SELECT running FROM transcriber_replicas"))
            )

        asyncio.get_running_loop().create_task(record())

    try:
        await listener.add_listener(NOTIFY_CHANNEL, on_notify)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
            app.state.worker.run_attempt = hold
            await wait_for(lambda: _row(pg_engine))
            await http.post("/v1/triggers", json={"job_id": "j1", "attempt": 1})
            await wait_for(lambda: app.state.worker.active)
            release.set()
            await wait_for(lambda: heard)
        assert heard[0] == (SLOT_FREED, 0)
    finally:
        await listener.close()
        await checker.close()
