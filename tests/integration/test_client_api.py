"""The Python client (``clients/python``) against the real enqueue API on loopback and
real PostgreSQL: every call, pagination, and each problem as its typed exception. The
sync client runs in a thread: the API is served by this test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service.app import create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_job, make_tenant
from testkit.asgi import serve_app
from testkit.ports import free_port
from transcription_client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    Job,
    JobStatus,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.status import JobStatus as S

MEDIA = "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc"
HOOK = "https://api.example.com/hooks/transcripts"


@dataclass
class Api:
    url: str
    key: str
    other_key: str
    engine: AsyncEngine


@pytest.fixture
async def api(pg_url: str, pg_engine: AsyncEngine) -> AsyncIterator[Api]:
    tenant = await make_tenant(pg_engine, "org-client")
    other = await make_tenant(pg_engine, "org-other")
    settings = EnqueueSettings(database_url=pg_url, max_request_bytes=64 * 1024)
    async with serve_app(create_app(settings)) as url:
        yield Api(url, tenant.api_key, other.api_key, pg_engine)


@pytest.fixture
async def client(api: Api) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api.url, api.key) as client:
        yield client


TRANSCRIPT = {
    "text": " Hello there. General Kenobi.",
    "language": "en",
    "language_probability": 0.97,
    "duration": 4.0,
    "model": "tiny.en",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": " Hello there."},
        {"id": 1, "start": 2.0, "end": 3.5, "text": " General Kenobi."},
    ],
}


async def finished_job(engine: AsyncEngine, tenant: str = "org-client") -> str:
    job = await make_job(engine, tenant, status=S.SUCCEEDED, attempts=1, completed_at=utcnow())
    async with engine.begin() as conn:
        await repo.save_transcript(conn, job.id, TRANSCRIPT)
    return job.id


async def test_create_then_get_reads_the_typed_job(client: AsyncClient) -> None:
    job = await client.create(
        MEDIA, HOOK, external_id="post-1", language="en", metadata={"creator": 42}
    )
    assert isinstance(job, Job) and job.status is JobStatus.QUEUED and not job.terminal
    assert job.external_id == "post-1" and job.language == "en"
    assert job.metadata == {"creator": 42} and job.media_url == MEDIA
    assert job.created_at.tzinfo is not None and job.completed_at is None
    assert await client.get(job.id) == job


async def test_an_idempotency_key_replays_the_first_job_and_refuses_another_body(
    client: AsyncClient,
) -> None:
    first = await client.create(MEDIA, HOOK, idempotency_key="order-7")
    again = await client.create(MEDIA, HOOK, idempotency_key="order-7")
    assert again.id == first.id
    with pytest.raises(Conflict) as refused:
        await client.create(MEDIA, HOOK + "/other", idempotency_key="order-7")
    assert refused.value.status == 409 and refused.value.type == "/problems/conflict"
    assert [job.id async for job in client.list_jobs()] == [first.id]


async def test_job_options_are_sent_as_they_are(client: AsyncClient) -> None:
    """An option is passed through untouched: the service's answer decides (here it
    knows no ``frobnicate``, so 422 naming the field)."""
    with pytest.raises(ValidationError) as refused:
        await client.create(MEDIA, HOOK, frobnicate=True)
    assert [e.field for e in refused.value.field_errors] == ["frobnicate"]


async def test_list_jobs_follows_the_cursor_through_every_page(
    client: AsyncClient, api: Api
) -> None:
    created = [(await client.create(MEDIA, HOOK, external_id=f"p{i % 2}")).id for i in range(7)]
    newest_first = created[::-1]
    assert [job.id async for job in client.list_jobs(page_size=2)] == newest_first
    assert [job.id async for job in client.list_jobs(page_size=200)] == newest_first
    page = await client.list_page(limit=3)
    assert len(page.jobs) == 3 and page.next_cursor is not None
    rest = await client.list_page(limit=3, cursor=page.next_cursor)
    assert [j.id for j in page.jobs + rest.jobs] == newest_first[:6]
    evens = [job.id async for job in client.list_jobs(external_id="p0", page_size=2)]
    assert evens == newest_first[::2]
    await client.cancel(created[0])
    canceled = [job.id async for job in client.list_jobs(status=JobStatus.CANCELED)]
    assert canceled == [created[0]]
    assert [job.id async for job in client.list_jobs(status="SUCCEEDED")] == []


async def test_the_transcript_in_every_format(client: AsyncClient, api: Api) -> None:
    job_id = await finished_job(api.engine)
    transcript = await client.transcript(job_id)
    assert transcript.text == TRANSCRIPT["text"] and transcript.duration == 4.0
    assert [s.text for s in transcript.segments] == [" Hello there.", " General Kenobi."]
    assert transcript.segments[1].start == 2.0 and transcript.segments[0].words is None
    assert (await client.transcript_text(job_id)).strip() == "Hello there. General Kenobi."
    srt = await client.transcript_text(job_id, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.")
    vtt = await client.transcript_text(job_id, "vtt")
    assert vtt.startswith("WEBVTT") and "00:00:02.000 --> 00:00:03.500" in vtt
    with pytest.raises(ValueError, match="format"):
        await client.transcript_text(job_id, "json")  # type: ignore[arg-type]
    job = await client.get(job_id)
    assert job.transcript == transcript and job.terminal


async def test_no_transcript_yet_is_a_conflict(client: AsyncClient) -> None:
    job = await client.create(MEDIA, HOOK)
    with pytest.raises(Conflict, match="no transcript yet"):
        await client.transcript(job.id)
    with pytest.raises(Conflict):
        await client.transcript_text(job.id, "srt")


async def test_cancel_redeliver_and_delete(client: AsyncClient, api: Api) -> None:
    job = await client.create(MEDIA, HOOK)
    canceled = await client.cancel(job.id)
    assert canceled.status is JobStatus.CANCELED and canceled.terminal
    with pytest.raises(Conflict):
        await client.cancel(job.id)
    with pytest.raises(Conflict):
        await client.redeliver(job.id)
    done = await finished_job(api.engine)
    redelivered = await client.redeliver(done)
    assert redelivered.status is JobStatus.SEND_FAILED and redelivered.completed_at
    await client.delete(job.id)
    with pytest.raises(NotFound):
        await client.get(job.id)


async def test_wait_returns_a_terminal_job_and_times_out_on_one_that_is_not(
    client: AsyncClient, api: Api
) -> None:
    done = await finished_job(api.engine)
    assert (await client.wait(done, timeout=5)).status is JobStatus.SUCCEEDED
    queued = await client.create(MEDIA, HOOK)
    with pytest.raises(WaitTimeout) as late:
        await client.wait(queued.id, timeout=0.3, poll_interval=0.1)
    assert late.value.job.id == queued.id and late.value.job.status is JobStatus.QUEUED


async def test_wait_sees_a_cancel_made_meanwhile(client: AsyncClient) -> None:
    job = await client.create(MEDIA, HOOK)
    waiting = asyncio.create_task(client.wait(job.id, timeout=30, poll_interval=0.05))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await client.cancel(job.id)
    assert (await waiting).status is JobStatus.CANCELED


async def test_problems_are_typed_exceptions(client: AsyncClient, api: Api) -> None:
    async with AsyncClient(api.url, "tsk_not-a-key") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            await stranger.get("anything")
    assert unauthorized.value.status == 401 and unauthorized.value.detail
    # Another tenant's job is not found, as any unknown id is.
    async with AsyncClient(api.url, api.other_key) as other:
        theirs = await other.create(MEDIA, HOOK)
    for job_id in (theirs.id, "no-such-job", "a/../b", "x?y#z"):
        with pytest.raises(NotFound) as missing:
            await client.get(job_id)
        assert missing.value.type == "/problems/not-found"
    with pytest.raises(ValidationError) as invalid:
        await client.create("file:///etc/passwd", HOOK)
    assert invalid.value.status == 422 and invalid.value.title
    assert [e.field for e in invalid.value.field_errors] == ["media_url"]
    assert invalid.value.problem["status"] == 422
    with pytest.raises(ValidationError) as bad_query:
        await client.list_page(limit=1000)
    assert [e.field for e in bad_query.value.field_errors] == ["limit"]
    with pytest.raises(PayloadTooLarge):
        await client.create(MEDIA, HOOK, metadata={"blob": "x" * 70_000})
    assert isinstance(invalid.value, ApiError)


async def test_a_service_that_cannot_reach_its_store_is_unavailable_with_retry_after() -> None:
    settings = EnqueueSettings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:9/none", api_key_cache_seconds=0
    )
    async with serve_app(create_app(settings)) as url, AsyncClient(url, "tsk_k") as client:
        with pytest.raises(ServiceUnavailable) as down:
            await client.create(MEDIA, HOOK)
    assert down.value.status == 503 and down.value.retry_after == 5.0


async def test_no_answer_is_a_transport_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # no one listens there
    async with AsyncClient(url, "tsk_k", timeout=2) as client:
        with pytest.raises(TransportError) as failed:
            await client.get("job")
    assert isinstance(failed.value.__cause__, httpx.TransportError)


async def test_the_sync_client_does_the_same(api: Api) -> None:
    done = await finished_job(api.engine)

    def use() -> None:
        with Client(api.url, api.key) as client:
            job = client.create(MEDIA, HOOK, external_id="sync", idempotency_key="k1")
            assert client.create(MEDIA, HOOK, external_id="sync", idempotency_key="k1") == job
            assert client.get(job.id) == job
            listed = [j.id for j in client.list_jobs(page_size=1)]
            assert listed == [job.id, done]
            assert client.cancel(job.id).status is JobStatus.CANCELED
            assert client.wait(job.id, timeout=5).status is JobStatus.CANCELED
            assert client.transcript(done).segments[0].text == " Hello there."
            assert client.transcript_text(done, "vtt").startswith("WEBVTT")
            assert client.redeliver(done).status is JobStatus.SEND_FAILED
            with pytest.raises(Conflict):
                client.transcript(job.id)
            with pytest.raises(WaitTimeout):
                client.wait(client.create(MEDIA, HOOK).id, timeout=0.2, poll_interval=0.1)
            client.delete(job.id)
            with pytest.raises(NotFound):
                client.get(job.id)

    await asyncio.to_thread(use)


async def test_a_client_of_your_own_is_left_open(api: Api) -> None:
    async with httpx.AsyncClient() as http:
        async with AsyncClient(api.url + "/", api.key, http=http) as client:
            await client.create(MEDIA, HOOK)
        assert not http.is_closed
        response = await http.get(api.url + "/healthz")
    assert response.status_code == 200
