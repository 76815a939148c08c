"""What the sync and the async client share: the requests they build and how they read
the answers. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from transcription_client.errors import UnexpectedResponse, error_from_response
from transcription_client.models import Job, JobPage, JobStatus, TextFormat, Transcript

USER_AGENT = "transcription-client-python/0.1"
#: ``GET /v1/jobs``'s largest ``limit``.
MAX_PAGE_SIZE = 200
TEXT_FORMATS: frozenset[str] = frozenset({"text", "srt", "vtt"})


@dataclass(frozen=True)
class Call:
    """One request: method, path under the base URL, and what goes with it."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None


def job_path(job_id: str, action: str = "") -> str:
    if not job_id:
        raise ValueError("a job id is needed")
    path = f"/v1/jobs/{quote(job_id, safe='')}"
    return f"{path}/{action}" if action else path


def create_call(
    media_url: str,
    webhook_url: str,
    *,
    external_id: str | None,
    language: str | None,
    metadata: Mapping[str, Any] | None,
    idempotency_key: str | None,
    options: Mapping[str, Any],
) -> Call:
    """``POST /v1/jobs``. ``options`` go into the body as they are (the job options of the
    contract, ``word_timestamps``, ``task``..., and any the service adds later); the
    service refuses one it does not know with 422."""
    body: dict[str, Any] = {"media_url": media_url, "webhook_url": webhook_url}
    for name, value in (("external_id", external_id), ("language", language)):
        if value is not None:
            body[name] = value
    if metadata is not None:
        body["metadata"] = dict(metadata)
    body.update(options)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/v1/jobs", json=body, headers=headers)


def list_call(
    *,
    status: JobStatus | str | None,
    external_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call:
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = str(status)
    if external_id is not None:
        params["external_id"] = external_id
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params=params)


def transcript_call(job_id: str, format: str, params: Mapping[str, str | int]) -> Call:
    return Call("GET", job_path(job_id, "transcript"), params={"format": format, **params})


def check_text_format(format: TextFormat) -> None:
    if format not in TEXT_FORMATS:
        raise ValueError(f"format must be one of {sorted(TEXT_FORMATS)}, not {format!r}")


def request_headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json, application/problem+json",
    }


def checked(response: httpx.Response) -> httpx.Response:
    """The response if it is 2xx; else its problem as an :class:`ApiError`."""
    if not response.is_success:
        raise error_from_response(response)
    return response


def json_body(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = json.loads(checked(response).content)
    except ValueError as exc:
        raise UnexpectedResponse(f"the answer is not JSON: {response.text[:200]!r}") from exc
    if not isinstance(body, dict):
        raise UnexpectedResponse(f"the answer is not a JSON object: {response.text[:200]!r}")
    return body


def read_job(response: httpx.Response) -> Job:
    return Job.from_json(json_body(response))


def read_page(response: httpx.Response) -> JobPage:
    return JobPage.from_json(json_body(response))


def read_transcript(response: httpx.Response) -> Transcript:
    return Transcript.from_json(json_body(response))


def read_text(response: httpx.Response) -> str:
    return checked(response).text
