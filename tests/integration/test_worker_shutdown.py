"""A worker shut down mid-job hands the job back without spending an attempt."""

from __future__ import annotations

from stack import running_stack
from testkit.asgi import wait_for
from transcription_core import repository as repo


async def test_shutdown_hands_the_job_back_uncounted(pg_url: str) -> None:
    async with running_stack(
        pg_url,
        "http://127.0.0.1:9",
        transcriber={"shutdown_grace_seconds": 0.2},
        orchestrator={"retry_backoff_seconds": 3600},
    ) as stack:
        job = await stack.enqueue("jfk.flac", media="stall")  # the download never ends
        await stack.wait_status(job["id"], "PROCESSING")
        engine = stack.engine

    # Leaving the stack shut the services down: the worker drained, then handed back.
    # (The stack disposed of its engine on the way out; what is opened again here is
    # disposed of too, or its connection outlives the test.)
    async def handed_back() -> bool:
        async with engine.connect() as conn:
            row = await repo.get_job(conn, job["id"])
        return row is not None and row.status == "FAILED"

    try:
        await wait_for(handed_back, timeout=10)
        async with engine.connect() as conn:
            row = await repo.get_job(conn, job["id"])
            events = await repo.job_events(conn, job["id"])
    finally:
        await engine.dispose()
    assert row is not None
    assert (row.failure_reason, row.attempts) == ("WORKER_LOST", 0)
    assert "shut down" in row.failure_detail
    assert [e.to_status for e in events] == ["QUEUED", "TRIGGERED", "PROCESSING", "FAILED"]
