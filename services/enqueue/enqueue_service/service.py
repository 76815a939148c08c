"""The enqueue service's use cases: authenticate, enqueue, read, cancel, redeliver, delete."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service.notifier import NewJobNotifier
from enqueue_service.schemas import JobCreate
from enqueue_service.settings import EnqueueSettings
from transcription_core import repository as repo
from transcription_core.errors import (
    Conflict,
    DuplicateIdempotencyKey,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from transcription_core.job import Job, NewJob
from transcription_core.models import utcnow
from transcription_core.options import Task, capability_problem
from transcription_core.repository import retention
from transcription_core.status import InvalidTransition
from transcription_core.storable import JsonObject, json_problem, text_problem
from transcription_core.urls import UnsafeUrl, check_url

log = logging.getLogger(__name__)


class ApiKeyCache:
    """Verified API keys by SHA-256, kept ``ttl`` seconds: one lookup per key per minute."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, key_hash: str) -> str | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, tenant: str) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key_hash] = (tenant, time.monotonic() + self.ttl)


async def authenticate(engine: AsyncEngine, cache: ApiKeyCache, authorization: str | None) -> str:
    """The tenant of a ``Bearer`` key, or :class:`Unauthorized`."""
    scheme, _, api_key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not api_key.strip():
        raise Unauthorized(
            "send an API key as `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    api_key = api_key.strip()
    key_hash = repo.hash_api_key(api_key)
    tenant = cache.get(key_hash)
    if tenant is None:
        async with engine.connect() as conn:
            tenant = await repo.tenant_for_api_key(conn, api_key)
        if tenant is None:
            raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        if cache.ttl > 0:
            cache.put(key_hash, tenant)
    return tenant


def validate_job(body: JobCreate, settings: EnqueueSettings) -> None:
    errors = []
    for field in ("media_url", "webhook_url"):
        try:
            check_url(
                getattr(body, field),
                allow_private=settings.allow_private_urls,
                allowed_networks=settings.private_networks_allowed,
            )
        except UnsafeUrl as exc:
            errors.append({"field": field, "message": str(exc)})
    problem = json_problem(body.metadata, settings.max_metadata_depth)
    if problem is not None:  # checked first: json.dumps recurses, and would write NaN
        errors.append({"field": "metadata", "message": f"metadata: {problem}"})
    else:
        size = len(json.dumps(body.metadata, separators=(",", ":")))
        if size > settings.max_metadata_bytes:
            errors.append(
                {
                    "field": "metadata",
                    "message": f"metadata is {size} bytes, over {settings.max_metadata_bytes}",
                }
            )
    for field in ("prompt", "hotwords"):
        text = getattr(body, field)
        if text is not None and len(text) > settings.max_prompt_chars:
            errors.append(
                {
                    "field": field,
                    "message": f"{field} is {len(text)} characters, over "
                    f"{settings.max_prompt_chars} (MAX_PROMPT_CHARS)",
                }
            )
    errors.extend(speaker_problems(body, settings))
    task = Task(body.task)
    problem = capability_problem(settings.model, task, body.language)
    if problem is not None:
        field = "task" if task == Task.TRANSLATE else "language"
        errors.append({"field": field, "message": problem})
    if errors:
        raise InvalidRequest("the job is invalid", errors=errors)


def speaker_problems(body: JobCreate, settings: EnqueueSettings) -> list[dict[str, str]]:
    """What is wrong with a job's ``diarize`` and speaker counts, if anything."""
    counts = [n for n in ("speakers", "min_speakers", "max_speakers") if getattr(body, n)]
    if not body.diarize:
        if counts:
            return [{"field": counts[0], "message": f"{counts[0]} is given with diarize only"}]
        return []
    if not settings.diarization:
        return [
            {
                "field": "diarize",
                "message": "diarization is not installed in this deployment "
                "(DIARIZATION=false: the transcribers lack the diarize extra): "
                "leave out diarize and the speaker counts",
            }
        ]
    problems = []
    if body.multichannel:
        problems.append(
            {
                "field": "multichannel",
                "message": "diarize and multichannel cannot be asked together: each channel "
                "is labelled already; ask for one of them",
            }
        )
    if body.speakers is not None and (body.min_speakers or body.max_speakers):
        problems.append(
            {
                "field": "speakers",
                "message": "give speakers (exact) or min_speakers/max_speakers, not both",
            }
        )
    low, high = body.min_speakers, body.max_speakers
    if low is not None and high is not None and low > high:
        problems.append(
            {"field": "min_speakers", "message": f"min_speakers {low} is over max_speakers {high}"}
        )
    return problems


@dataclass(frozen=True)
class Enqueued:
    job: Job
    created: bool


@dataclass
class JobWriter:
    """Inserts new jobs and announces them.

    On PostgreSQL the insert is one statement on a plain asyncpg pool in autocommit (the
    API's hot path; see ``repository.insert_job_asyncpg``) and ``notifier`` sends the
    NOTIFY after commit; elsewhere (SQLite) it is a transaction on the engine, and the
    orchestrator polls.
    """

    engine: AsyncEngine
    pool: asyncpg.Pool | None = None
    notifier: NewJobNotifier | None = None

    async def insert(self, new: NewJob) -> Job:
        if self.pool is not None:
            async with self.pool.acquire() as conn:
                try:
                    job = await repo.insert_job_asyncpg(conn, new)
                except asyncpg.InternalClientError:
                    conn.terminate()  # the server dropped it while it sat in the pool
                    raise
        else:
            async with self.engine.begin() as conn:
                job = await repo.insert_job(conn, new)
        if self.notifier is not None:
            self.notifier.job_added()
        return job


async def enqueue(
    writer: JobWriter,
    settings: EnqueueSettings,
    tenant: str,
    body: JobCreate,
    idempotency_key: str | None,
) -> Enqueued:
    """Save a QUEUED job; a replayed ``Idempotency-Key`` returns the first job instead."""
    validate_job(body, settings)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 256:
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 256 characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 256 characters"}],
        )
    problem = None if idempotency_key is None else text_problem(idempotency_key)
    if problem is not None:  # the HTTP parsers refuse NUL in a header; this is for others
        raise InvalidRequest(
            f"Idempotency-Key {problem}", errors=[{"field": "Idempotency-Key", "message": problem}]
        )
    request_hash = hashlib.sha256(body.canonical_json().encode()).hexdigest()
    new = NewJob(
        tenant=tenant,
        media_url=body.media_url,
        webhook_url=body.webhook_url,
        external_id=body.external_id,
        language=body.language,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        request_hash=request_hash if idempotency_key else None,
        task=Task(body.task),
        word_timestamps=body.word_timestamps,
        prompt=body.prompt,
        hotwords=body.hotwords,
        multichannel=body.multichannel,
        diarize=body.diarize,
        speakers=body.speakers,
        min_speakers=body.min_speakers,
        max_speakers=body.max_speakers,
    )
    window = timedelta(hours=settings.idempotency_window_hours)
    for _ in range(3):
        try:
            return Enqueued(await writer.insert(new), created=True)
        except DuplicateIdempotencyKey:
            pass
        assert idempotency_key is not None
        async with writer.engine.begin() as conn:
            existing = await repo.job_by_idempotency_key(conn, tenant, idempotency_key)
            if existing is None:
                continue  # released in between: try the insert again
            if existing.created_at < utcnow() - window:
                await repo.release_idempotency_key(conn, existing.id, idempotency_key)
                continue
            if existing.request_hash != request_hash:
                raise Conflict("this Idempotency-Key was used with a different request body")
            return Enqueued(existing, created=False)
    raise Conflict("this Idempotency-Key is being used by concurrent requests; retry")


async def get_job(
    engine: AsyncEngine, tenant: str, job_id: str, with_transcript: bool = True
) -> tuple[Job, JsonObject | None]:
    async with engine.connect() as conn:
        job = await repo.get_job(conn, job_id, tenant)
        if job is None:
            raise NotFound(f"no job {job_id}")
        transcript = await repo.get_transcript(conn, job_id) if with_transcript else None
    return job, transcript


async def cancel(engine: AsyncEngine, tenant: str, job_id: str) -> Job:
    async with engine.begin() as conn:
        try:
            job = await repo.cancel(conn, job_id, actor=f"client:{tenant}", tenant=tenant)
        except InvalidTransition as exc:
            raise Conflict("the job has finished and can no longer be canceled") from exc
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def redeliver(engine: AsyncEngine, tenant: str, job_id: str) -> Job:
    """Send the last message again, with the ``webhook-id`` it had the first time.

    A SUCCEEDED or PERMAFAILED job goes back to the delivery queue, due now; the worker
    sends the stored transcript (or the failure) and does not transcribe again.
    """
    async with engine.begin() as conn:
        job = await repo.get_job(conn, job_id, tenant)
        if job is None:
            raise NotFound(f"no job {job_id}")
        try:
            moved = await repo.request_redelivery(conn, job, actor=f"client:{tenant}")
        except InvalidTransition as exc:
            raise Conflict(
                f"the job is {job.status}: only a finished job can be redelivered"
            ) from exc
    if moved is None:
        raise Conflict("the job changed while the request ran; try again")
    return moved


async def delete(engine: AsyncEngine, tenant: str, job_id: str) -> None:
    """Delete a finished job with its transcript, chunks, events and webhook payload, at
    once; a job not finished is a :class:`Conflict`, as is one being redelivered."""
    async with engine.begin() as conn:
        deleted = await retention.delete_finished_job(conn, job_id, tenant)
    if not deleted:
        raise NotFound(f"no job {job_id}")
    log.info("job deleted by its client", extra={"job_id": job_id, "action": "delete"})
