"""Jobs through the whole service on real PostgreSQL: the tiny.en model on real speech,
real HTTP peers on loopback, and the faults each of them can have."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook

from stack import running_stack
from testkit.data import JFK_TEXT
from testkit.procs import model_server
from testkit.text import words
from transcription_cli.main import main as cli
from transcription_core import repository as repo

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_server_url() -> Iterator[str]:
    with model_server(MODEL="tiny.en", MAX_BATCH_SIZE="4") as server:
        yield server.url


def verified(secret: str, delivery) -> dict:
    """The payload, after checking the signature with the standardwebhooks package."""
    return Webhook(secret).verify(delivery.body, delivery.headers)


async def test_jfk_succeeds_and_the_signed_webhook_carries_the_reference_text(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        job = await stack.enqueue("jfk.flac", external_id="post-1", metadata={"k": "v"})
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED", done
        assert words(done["transcript"]["text"]) == words(JFK_TEXT)
        transcript = done["transcript"]
        assert transcript["language"] == "en" and transcript["model"] == "tiny.en"
        assert 10.5 <= transcript["duration"] <= 11.5
        assert transcript["segments"][0]["start"] < 1.0
        assert transcript["segments"][-1]["end"] <= transcript["duration"]
        (delivery,) = stack.receiver.deliveries
        payload = verified(stack.webhook_secret, delivery)
        assert payload["type"] == "transcription.succeeded"
        assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "SUCCEEDED"
        assert payload["data"]["external_id"] == "post-1"
        assert payload["data"]["metadata"] == {"k": "v"}
        assert words(payload["data"]["transcript"]["text"]) == words(JFK_TEXT)
        srt = await stack.api.get(
            f"/v1/jobs/{job['id']}/transcript?format=srt",
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        assert srt.status_code == 200 and srt.text.startswith("1\n00:00:0")
        events = [e.to_status for e in await stack.events(job["id"])]
        assert events == ["QUEUED", "TRIGGERED", "PROCESSING", "SUCCEEDED"]
        async with stack.engine.connect() as conn:  # one chunk: the transcript holds it
            assert await repo.saved_chunks(conn, job["id"]) == []


async def test_a_receiver_failing_three_times_gets_the_fourth_with_the_same_id(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        stack.receiver.answers = [500, 502, 404]
        job = await stack.enqueue("jfk.flac")
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED"
        deliveries = stack.receiver.deliveries
        assert [d.answered for d in deliveries] == [500, 502, 404, 200]
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1
        assert len({d.body for d in deliveries}) == 1  # one message, the same content
        for delivery in deliveries:
            verified(stack.webhook_secret, delivery)
        assert stack.model.forwarded == 1  # transcribed once, delivered four times
        statuses = [e.to_status for e in await stack.events(job["id"])]
        assert statuses.count("SEND_FAILED") == 3 and statuses[-1] == "SUCCEEDED"


async def test_a_receiver_down_for_good_ends_webhook_failed_with_the_transcript_kept(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        stack.receiver.answers = [503] * 20
        job = await stack.enqueue("jfk.flac")
        done = await stack.wait_status(job["id"], "PERMAFAILED", "SUCCEEDED")
        assert (done["status"], done["failure_reason"]) == ("PERMAFAILED", "WEBHOOK_FAILED")
        assert len(stack.receiver.deliveries) == 5  # the first and 4 scheduled retries
        assert words(done["transcript"]["text"]) == words(JFK_TEXT)
        text = await stack.api.get(
            f"/v1/jobs/{job['id']}/transcript?format=text",
            headers={"Authorization": f"Bearer {stack.api_key}"},
        )
        assert words(text.text) == words(JFK_TEXT)
        # The client fixes its receiver and asks again: same message, same id.
        stack.receiver.answers = []
        response = await stack.api.post(
            f"/v1/jobs/{job['id']}/redeliver", headers={"Authorization": f"Bearer {stack.api_key}"}
        )
        assert response.status_code == 202
        await stack.wait_status(job["id"], "SUCCEEDED")
        assert stack.receiver.deliveries[-1].answered == 200
        assert len({d.headers["webhook-id"] for d in stack.receiver.deliveries}) == 1
        assert stack.model.forwarded == 1


async def test_retry_after_on_429_is_honoured(pg_url: str, model_server_url: str) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        stack.receiver.answers = [(429, {"Retry-After": "2"})]
        job = await stack.enqueue("jfk.flac")
        await stack.wait_status(job["id"], "SUCCEEDED")
        events = await stack.events(job["id"])
        failed = next(e for e in events if e.to_status == "SEND_FAILED")
        retried = next(
            e for e in events if e.to_status == "TRIGGERED" and e.from_status == "SEND_FAILED"
        )
        # The schedule says 0.05 s; the receiver asked for 2 s.
        assert (retried.created_at - failed.created_at).total_seconds() >= 2


@pytest.mark.parametrize(
    ("status", "reason"), [(403, "DOWNLOAD_FORBIDDEN"), (404, "DOWNLOAD_NOT_FOUND")]
)
async def test_an_expired_url_gets_one_failed_webhook_and_no_retry(
    pg_url: str, model_server_url: str, status: int, reason: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        job = await stack.enqueue("jfk.flac", media=f"status{status}")
        done = await stack.wait_status(job["id"], "PERMAFAILED", "SUCCEEDED")
        assert (done["status"], done["failure_reason"]) == ("PERMAFAILED", reason)
        assert str(status) in done["failure_detail"] and done["attempts"] == 1
        (delivery,) = stack.receiver.deliveries
        payload = verified(stack.webhook_secret, delivery)
        assert payload["type"] == "transcription.failed"
        assert payload["data"]["failure_reason"] == reason
        assert [entry.file for entry in stack.media.log] == ["jfk.flac"]
        assert stack.model.forwarded == 0


async def test_a_model_server_failing_some_chunks_is_retried_within_the_attempt(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        stack.model.fail_next = 2
        job = await stack.enqueue("jfk.flac")
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED" and done["attempts"] == 1
        assert stack.model.refused == 2 and stack.model.forwarded == 1


async def test_a_model_server_down_then_back_is_retried_to_success(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(
        pg_url, model_server_url, transcriber={"retry_backoff_seconds": 2.0}
    ) as stack:
        stack.model.unavailable = True
        job = await stack.enqueue("jfk.flac")
        failed = await stack.wait_status(job["id"], "FAILED", "PERMAFAILED")
        assert (failed["status"], failed["failure_reason"]) == ("FAILED", "MODEL_ERROR")
        stack.model.unavailable = False
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED" and done["attempts"] >= 2
        assert words(done["transcript"]["text"]) == words(JFK_TEXT)


async def test_model_down_for_every_attempt_then_requeue_after_the_fix(
    pg_url: str, model_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        stack.model.unavailable = True
        job = await stack.enqueue("jfk.flac")
        gone = await stack.enqueue("missing.mp3")  # the media server answers 404
        done = await stack.wait_status(job["id"], "PERMAFAILED", "SUCCEEDED")
        assert (done["status"], done["failure_reason"], done["attempts"]) == (
            "PERMAFAILED",
            "MODEL_ERROR",
            3,
        )
        assert (await stack.wait_status(gone["id"], "PERMAFAILED"))["failure_reason"] == (
            "DOWNLOAD_NOT_FOUND"
        )
        failed_types = [
            verified(stack.webhook_secret, d)["type"] for d in stack.receiver.deliveries
        ]
        assert failed_types == ["transcription.failed"] * 2

        stack.model.unavailable = False
        monkeypatch.setenv("DATABASE_URL", pg_url)
        assert await asyncio.to_thread(cli, ["requeue", "--since", "1h"]) == 0
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED"
        assert (await stack.job(gone["id"]))["status"] == "PERMAFAILED"
        last = verified(stack.webhook_secret, stack.receiver.deliveries[-1])
        assert last["type"] == "transcription.succeeded" and last["data"]["id"] == job["id"]
        # A new message after the requeue: a new webhook-id.
        ids = [d.headers["webhook-id"] for d in stack.receiver.deliveries]
        assert len(set(ids)) == 3


async def test_a_second_attempt_reuses_the_chunks_of_the_first(
    pg_url: str, model_server_url: str
) -> None:
    """multilingual.mp3 is 60 s: several chunks. The model goes down after the first."""
    slow_retry = {"retry_backoff_seconds": 2.0}
    async with running_stack(
        pg_url, model_server_url, transcriber={"chunk_concurrency": 1, **slow_retry}
    ) as stack:
        stack.model.unavailable_after = 1
        job = await stack.enqueue("multilingual.mp3", language="en")
        failed = await stack.wait_status(job["id"], "FAILED", "PERMAFAILED", "SUCCEEDED")
        assert failed["status"] == "FAILED" and failed["failure_reason"] == "MODEL_ERROR"
        async with stack.engine.connect() as conn:
            saved = await repo.saved_chunks(conn, job["id"])
        assert len(saved) == stack.model.forwarded == 1
        stack.model.unavailable = False
        done = await stack.wait_status(job["id"], "SUCCEEDED", "PERMAFAILED")
        assert done["status"] == "SUCCEEDED" and done["attempts"] == 2
        async with stack.engine.connect() as conn:
            chunks = await repo.saved_chunks(conn, job["id"])
        # Every chunk went to the model exactly once across both attempts.
        assert stack.model.forwarded == len(chunks) > 1
        assert "permission" in done["transcript"]["text"].lower()


async def test_not_media_is_permafailed_undecodable(pg_url: str, model_server_url: str) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        job = await stack.enqueue("README.md")  # a text file
        done = await stack.wait_status(job["id"], "PERMAFAILED", "SUCCEEDED")
        assert done["failure_reason"] == "MEDIA_UNDECODABLE" and done["attempts"] == 1
        payload = json.loads(stack.receiver.deliveries[0].body)
        assert payload["type"] == "transcription.failed"
