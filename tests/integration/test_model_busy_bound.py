"""MODEL_BUSY_DEADLINE_SECONDS against loopback peers that keep saying "queue full":
the model server's own 503 (rendered by its problem handler) and Knative's
queue-proxy's. Waiting spends no attempt, and the wait is bounded by the setting."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from model_server.errors import QueueFull
from stack import running_stack
from testkit.asgi import serve_app
from transcriber_service.model_client import ModelServerClient, ModelServerError
from transcription_core.http import install_problem_handlers

OK = (
    '{"segments": [{"start": 0, "end": 1, "text": " ok"}], "language": "en",'
    ' "language_probability": 1, "duration": 1, "model": "fake"}'
)


def full_model_server(
    answers_full: int | None = None, retry_after: int = 0
) -> tuple[FastAPI, list[int]]:
    """Answers the model server's queue-full 503 (``answers_full`` times, or always)."""
    app = FastAPI()
    install_problem_handlers(app)
    seen: list[int] = []

    @app.post("/v1/predict")
    async def predict(request: Request) -> PlainTextResponse:
        await request.body()
        seen.append(1)
        if answers_full is None or len(seen) <= answers_full:
            raise QueueFull(2, retry_after)
        return PlainTextResponse(OK, media_type="application/json")

    return app, seen


def knative_queue_proxy(answers_full: int) -> tuple[FastAPI, list[int]]:
    """Knative's queue-proxy in front of a full replica, then the replica's answer."""
    app = FastAPI()
    seen: list[int] = []

    @app.post("/v1/predict")
    async def predict() -> PlainTextResponse:
        seen.append(1)
        if len(seen) <= answers_full:
            return PlainTextResponse("pending request queue full\n", status_code=503)
        return PlainTextResponse(OK, media_type="application/json")

    return app, seen


async def test_a_full_queue_is_waited_out_without_spending_an_attempt() -> None:
    for app, seen in (full_model_server(answers_full=4), knative_queue_proxy(answers_full=4)):
        async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as http:
            client = ModelServerClient(http, url, max_attempts=1, initial_backoff=0.01)
            result = await client.predict(b"\x00\x00" * 100, language="en")
        assert result.text == "ok" and len(seen) == 5


async def test_a_queue_that_stays_full_fails_the_chunk_at_the_deadline() -> None:
    app, seen = full_model_server()
    async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as http:
        client = ModelServerClient(
            http, url, max_attempts=1, busy_deadline=0.3, initial_backoff=0.01, max_backoff=0.05
        )
        with pytest.raises(ModelServerError, match="MODEL_BUSY_DEADLINE_SECONDS") as failed:
            await client.predict(b"\x00\x00", language="en")
    assert failed.value.status_code == 503 and len(seen) > 1


async def test_a_job_whose_model_tier_stays_full_ends_model_error_after_the_deadline(
    pg_url: str,
) -> None:
    app, seen = full_model_server()
    async with (
        serve_app(app) as model_url,
        running_stack(
            pg_url,
            model_url,
            transcriber={"model_busy_deadline_seconds": 0.5, "max_attempts": 1},
            orchestrator={"max_attempts": 1},
        ) as stack,
    ):
        job = await stack.enqueue("jfk.flac", language="en")
        done = await stack.wait_status(job["id"], "PERMAFAILED", "SUCCEEDED")
    assert (done["status"], done["failure_reason"], done["attempts"]) == (
        "PERMAFAILED",
        "MODEL_ERROR",
        1,
    )
    assert "the model tier stayed full" in done["failure_detail"]
    assert "MODEL_BUSY_DEADLINE_SECONDS" in done["failure_detail"]
    assert len(seen) > 1


async def test_the_lease_outlives_a_wait_longer_than_itself(pg_url: str) -> None:
    """Five queue-full answers with Retry-After: 1 against a lease of 2 s: the worker's
    heartbeat keeps the lease while the chunk waits, so no WORKER_LOST, no second attempt."""
    app, seen = full_model_server(answers_full=5, retry_after=1)
    short_lease = {"lease_seconds": 2, "max_attempts": 1}
    async with (
        serve_app(app) as model_url,
        running_stack(
            pg_url, model_url, transcriber=short_lease, orchestrator=short_lease
        ) as stack,
    ):
        job = await stack.enqueue("jfk.flac", language="en")
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED", "FAILED")
        events = [e.to_status for e in await stack.events(job["id"])]
    assert (done["status"], done["attempts"]) == ("SUCCEEDED", 1), done
    assert events == ["QUEUED", "TRIGGERED", "PROCESSING", "SUCCEEDED"]
    assert len(seen) == 6
