"""The client API: ``/v1/jobs``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service import service
from enqueue_service.schemas import JobCreate, JobPage, TranscriptFormat
from enqueue_service.settings import EnqueueSettings
from transcription_core import repository as repo
from transcription_core.captions import DEFAULT_MAX_LINE_CHARS, DEFAULT_MAX_LINES, render_captions
from transcription_core.errors import Conflict, InvalidRequest
from transcription_core.schemas import JobResource
from transcription_core.status import JobStatus
from transcription_core.storable import StorableText
from transcription_core.transcript import Transcript

router = APIRouter(prefix="/v1")

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {401: PROBLEM, 404: PROBLEM, 422: PROBLEM}


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def _settings(request: Request) -> EnqueueSettings:
    settings: EnqueueSettings = request.app.state.settings
    return settings


#: Declares the API key in the OpenAPI document (HTTP bearer: the docs' Authorize button,
#: and generated clients send it). It refuses nothing itself: ``service.authenticate``
#: answers a missing or wrong key with the 401 problem.
bearer = HTTPBearer(
    scheme_name="ApiKey",
    bearerFormat="tsk_...",
    description="The tenant's API key (`transcription tenants create` prints it): "
    "`Authorization: Bearer tsk_...`.",
    auto_error=False,
)


async def _tenant(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    return await service.authenticate(
        request.app.state.engine, request.app.state.api_keys, request.headers.get("authorization")
    )


Engine = Annotated[AsyncEngine, Depends(_engine)]
Settings = Annotated[EnqueueSettings, Depends(_settings)]
Tenant = Annotated[str, Depends(_tenant)]
#: A job id in the path: NUL is refused here (422), not by the store (it arrives as %00).
JobId = StorableText


def _job_json(job: JobResource, status_code: int = 200, **headers: str) -> Response:
    return Response(
        job.to_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobResource,
    responses={
        200: {"model": JobResource, "description": "Idempotent replay"},
        409: PROBLEM,
        413: PROBLEM,
        **ERRORS,
    },
    summary="Enqueue a transcription job",
)
async def create_job(
    request: Request,
    body: JobCreate,
    settings: Settings,
    tenant: Tenant,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    result = await service.enqueue(
        request.app.state.job_writer, settings, tenant, body, idempotency_key
    )
    job = JobResource.from_job(result.job)
    return _job_json(job, 202 if result.created else 200, Location=f"/v1/jobs/{job.id}")


@router.get("/jobs", response_model=JobPage, responses=ERRORS, summary="List jobs, newest first")
async def list_jobs(
    engine: Engine,
    tenant: Tenant,
    status: JobStatus | None = None,
    external_id: Annotated[StorableText | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[StorableText | None, Query(max_length=512)] = None,
) -> Response:
    async with engine.connect() as conn:
        try:
            rows, next_cursor = await repo.list_jobs(
                conn, tenant, status=status, external_id=external_id, limit=limit, cursor=cursor
            )
        except ValueError as exc:
            raise InvalidRequest(
                str(exc), errors=[{"field": "cursor", "message": str(exc)}]
            ) from exc
    page = JobPage(jobs=[JobResource.from_job(job) for job in rows], next_cursor=next_cursor)
    return Response(page.to_json(), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobResource, responses=ERRORS, summary="One job")
async def get_job(job_id: JobId, engine: Engine, tenant: Tenant) -> Response:
    job, transcript = await service.get_job(engine, tenant, job_id)
    return _job_json(JobResource.from_job(job, transcript))


@router.get(
    "/jobs/{job_id}/transcript",
    responses={
        409: PROBLEM,
        **ERRORS,
        200: {
            "content": {
                "application/json": {},
                "text/plain": {},
                "text/vtt": {},
                "application/x-subrip": {},
            }
        },
    },
    summary="The job's transcript as json, text, srt or vtt",
)
async def get_transcript(
    job_id: JobId,
    engine: Engine,
    tenant: Tenant,
    format: TranscriptFormat = "json",
    max_line_chars: Annotated[
        int, Query(ge=10, le=200, description="srt, vtt: the longest line of a cue.")
    ] = DEFAULT_MAX_LINE_CHARS,
    max_lines: Annotated[
        int, Query(ge=1, le=10, description="srt, vtt: the most lines in a cue.")
    ] = DEFAULT_MAX_LINES,
) -> Response:
    """Captions (srt, vtt) are cut at word timings where the job has them
    (`word_timestamps`), and no cue lasts longer than its speech. With speaker labels
    (`diarize`), vtt names each cue's speaker in a voice tag (`<v Speaker 0>`), srt opens
    it with `[Speaker 0]`, and text opens a paragraph per change of speaker with
    `Speaker 0:`."""
    job, transcript = await service.get_job(engine, tenant, job_id)
    if transcript is None:
        raise Conflict(f"the job is {job.status} and has no transcript yet")
    if format == "json":
        return JSONResponse(transcript)
    media_type = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}[format]
    stored = transcript.get("text")
    stored_segments = transcript.get("segments")
    labelled = isinstance(stored_segments, list) and any(
        isinstance(s, dict) and "speaker" in s for s in stored_segments
    )
    if format == "text" and isinstance(stored, str) and stored and not labelled:
        rendered = stored  # as it was written
    elif format in ("srt", "vtt"):
        segments = Transcript.from_json(transcript).segments
        rendered = render_captions(segments, format, max_line_chars, max_lines)
    else:
        rendered = Transcript.from_json(transcript).render(format)
    return PlainTextResponse(rendered, media_type=media_type)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobResource,
    responses={409: PROBLEM, **ERRORS},
    summary="Cancel a job that has not finished",
)
async def cancel_job(job_id: JobId, engine: Engine, tenant: Tenant) -> Response:
    return _job_json(JobResource.from_job(await service.cancel(engine, tenant, job_id)))


@router.post(
    "/jobs/{job_id}/redeliver",
    status_code=202,
    response_model=JobResource,
    responses={409: PROBLEM, **ERRORS},
    summary="Send the webhook again",
)
async def redeliver_job(job_id: JobId, engine: Engine, tenant: Tenant) -> Response:
    job = await service.redeliver(engine, tenant, job_id)
    return _job_json(JobResource.from_job(job), 202)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    responses={409: PROBLEM, **ERRORS},
    summary="Delete a finished job with its transcript, at once",
)
async def delete_job(job_id: JobId, engine: Engine, tenant: Tenant) -> Response:
    await service.delete(engine, tenant, job_id)
    return Response(status_code=204)
