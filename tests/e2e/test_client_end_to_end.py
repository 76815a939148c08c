"""The Python client (``clients/python``) against the whole running service on real
PostgreSQL and the tiny.en model on real speech: a job sent, waited for and read in every
format; its real webhooks verified by ``verify_webhook`` (and by the ``standardwebhooks``
package, as a cross-check); and the webhook receiver of the client's README, run as
written."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from stack import TENANT, Stack, running_stack
from testkit.asgi import serve_app, wait_for
from testkit.data import JFK_TEXT
from testkit.procs import model_server
from testkit.text import words
from transcription_client import AsyncClient, Client, JobStatus, verify_webhook

pytestmark = [pytest.mark.model, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md"


@pytest.fixture(scope="module")
def model_server_url() -> Iterator[str]:
    with model_server(MODEL="tiny.en", MAX_BATCH_SIZE="4") as server:
        yield server.url


def client_of(stack: Stack) -> AsyncClient:
    return AsyncClient(str(stack.api.base_url), stack.api_key)


def media(stack: Stack, behaviour: str = "ok", name: str = "jfk.flac") -> str:
    return stack.media.media_url(uuid.uuid4().hex[:8], behaviour, name)


def readme_receiver() -> dict[str, Any]:
    """The webhook receiver of the client's README, executed as written: its names."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (receiver,) = [block for block in blocks if "verify_webhook(request.headers" in block]
    names: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(receiver, str(README), "exec"), names)
    return names


async def test_a_job_sent_waited_for_and_read_in_every_format_and_its_webhooks_verified(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack, client_of(stack) as client:
        job = await client.create(
            media(stack),
            stack.receiver.hook_url(TENANT),
            external_id="post-1",
            metadata={"k": "v"},
            idempotency_key="post-1",
        )
        assert job.status is JobStatus.QUEUED
        replay = await client.create(
            job.media_url, job.webhook_url, external_id="post-1", metadata={"k": "v"},
            idempotency_key="post-1",
        )  # fmt: skip
        assert replay.id == job.id
        done = await client.wait(job.id, timeout=120, poll_interval=0.1)
        assert done.status is JobStatus.SUCCEEDED and done.completed_at is not None
        assert done.transcript is not None
        assert words(done.transcript.text) == words(JFK_TEXT)

        transcript = await client.transcript(job.id)
        assert transcript == done.transcript and transcript.model == "tiny.en"
        assert 10.5 <= transcript.duration <= 11.5
        assert transcript.segments[-1].end <= transcript.duration
        assert words(await client.transcript_text(job.id, "text")) == words(JFK_TEXT)
        srt = await client.transcript_text(job.id, "srt")
        assert srt.startswith("1\n00:00:0") and set(words(srt)) >= set(words(JFK_TEXT))
        vtt = await client.transcript_text(job.id, "vtt")
        assert vtt.startswith("WEBVTT")
        assert [j.id async for j in client.list_jobs(external_id="post-1")] == [job.id]

        # The real webhook, verified; then a redelivery: the same message id, verified too.
        redelivered = await client.redeliver(job.id)
        assert redelivered.status is JobStatus.SEND_FAILED
        again = await client.wait(job.id, timeout=60, poll_interval=0.1)
        assert again.status is JobStatus.SUCCEEDED
        first, second = stack.receiver.deliveries
        events = [verify_webhook(d.headers, d.body, stack.webhook_secret) for d in (first, second)]
        for delivery, event in zip((first, second), events, strict=True):
            assert delivery.signature_ok  # the standardwebhooks package agrees
            assert Webhook(stack.webhook_secret).verify(delivery.body, delivery.headers)
            assert event.type == "transcription.succeeded"
            assert event.job.id == job.id and event.job.status is JobStatus.SUCCEEDED
            assert event.job.external_id == "post-1" and event.job.metadata == {"k": "v"}
            assert event.job.transcript == transcript
        assert events[0].webhook_id == events[1].webhook_id == first.webhook_id


async def test_a_failed_job_its_failed_webhook_and_the_sync_client(
    pg_url: str, model_server_url: str
) -> None:
    async with running_stack(pg_url, model_server_url) as stack:
        url = str(stack.api.base_url)

        def send_and_wait() -> Any:
            with Client(url, stack.api_key) as client:
                job = client.create(media(stack, "status404"), stack.receiver.hook_url(TENANT))
                return client.wait(job.id, timeout=120, poll_interval=0.1)

        done = await asyncio.to_thread(send_and_wait)
        assert done.status is JobStatus.PERMAFAILED and done.transcript is None
        assert done.failure_reason == "DOWNLOAD_NOT_FOUND" and "404" in (done.failure_detail or "")
        await wait_for(lambda: stack.receiver.delivered, timeout=30)
        (delivery,) = stack.receiver.deliveries
        event = verify_webhook(delivery.headers, delivery.body, stack.webhook_secret)
        assert event.type == "transcription.failed" and event.job.id == done.id
        assert event.job.status is JobStatus.PERMAFAILED and event.job.transcript is None
        assert event.job.failure_reason == "DOWNLOAD_NOT_FOUND"


async def test_the_readme_receiver_takes_the_real_webhook_once(
    pg_url: str, model_server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    async with running_stack(pg_url, model_server_url) as stack, client_of(stack) as client:
        monkeypatch.setenv("TRANSCRIPTION_WEBHOOK_SECRET", stack.webhook_secret)
        receiver = readme_receiver()
        async with serve_app(receiver["app"]) as hooks:
            job = await client.create(
                media(stack), f"{hooks}/hooks/transcripts", external_id="post-9"
            )
            done = await client.wait(job.id, timeout=120, poll_interval=0.1)
            assert done.status is JobStatus.SUCCEEDED  # the receiver answered 2xx
            await client.redeliver(job.id)
            assert (await client.wait(job.id, timeout=60)).status is JobStatus.SUCCEEDED
        assert len(receiver["seen"]) == 1  # the redelivery had the same id: handled once
        (line,) = capsys.readouterr().out.splitlines()
        assert line.startswith("post-9: ") and set(words(line)) >= set(words(JFK_TEXT))
        assert stack.receiver.deliveries == []


async def test_the_readme_receiver_refuses_a_forged_webhook(
    pg_url: str, model_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed with another tenant's secret: 400, and the job stays undelivered."""
    async with running_stack(pg_url, model_server_url) as stack, client_of(stack) as client:
        monkeypatch.setenv("TRANSCRIPTION_WEBHOOK_SECRET", "whsec_" + "A" * 43 + "=")
        receiver = readme_receiver()
        async with serve_app(receiver["app"]) as hooks:
            job = await client.create(media(stack), f"{hooks}/hooks/transcripts")

            async def refused() -> bool:
                found = await client.get(job.id)
                return found.failure_reason == "WEBHOOK_FAILED" and "HTTP 400" in (
                    found.failure_detail or ""
                )

            await wait_for(refused, timeout=120, interval=0.1)
        assert receiver["seen"] == set()
