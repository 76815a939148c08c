"""Job options at enqueue (issue 15): validated (422 naming the field), refused when the
served model cannot honour them, stored with the job, echoed in the job resource and its
listing, and read back from the store as typed values; on PostgreSQL and SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from enqueue_service.app import create_app
from enqueue_service.settings import EnqueueSettings
from factories import make_tenant
from testkit.asgi import serve_app
from transcription_core import repository as repo
from transcription_core.options import Task

JOB = {
    "media_url": "https://bucket.example.com/v/123.mp4?X-Amz-Signature=abc",
    "webhook_url": "https://api.example.com/hooks/transcripts",
}
OPTIONS = {
    "task": "translate",
    "language": "de",
    "word_timestamps": True,
    "prompt": "Glossary: ComfyUI, Kubernetes.",
    "hotwords": "ComfyUI",
    "multichannel": True,
}
DEFAULTS = {
    "task": "transcribe",
    "language": None,
    "word_timestamps": False,
    "prompt": None,
    "hotwords": None,
    "multichannel": False,
    "diarize": False,
    "speakers": None,
    "min_speakers": None,
    "max_speakers": None,
}


async def _client(
    database_url: str, engine: AsyncEngine, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    tenant = await make_tenant(engine)
    config = EnqueueSettings(database_url=database_url, **settings)
    async with (
        serve_app(create_app(config)) as url,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {tenant.api_key}"}
        ) as http,
    ):
        yield http


@pytest.fixture
async def multilingual(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API of a deployment that serves the multilingual ``base``."""
    async for http in _client(database_url, engine, model="base", max_prompt_chars=100):
        yield http


@pytest.fixture
async def diarizing(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API of a deployment whose transcribers label speakers (DIARIZATION=true)."""
    async for http in _client(database_url, engine, diarization=True):
        yield http


@pytest.fixture
async def english(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The API of a deployment that serves ``tiny.en`` (the default)."""
    async for http in _client(database_url, engine):
        yield http


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body["errors"]}


async def test_every_option_is_stored_echoed_and_listed(
    multilingual: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await multilingual.post("/v1/jobs", json={**JOB, **OPTIONS})
    assert created.status_code == 202, created.text
    job = created.json()
    assert {name: job[name] for name in OPTIONS} == OPTIONS
    fetched = (await multilingual.get(f"/v1/jobs/{job['id']}")).json()
    assert {name: fetched[name] for name in OPTIONS} == OPTIONS
    (listed,) = (await multilingual.get("/v1/jobs")).json()["jobs"]
    assert {name: listed[name] for name in OPTIONS} == OPTIONS
    async with engine.connect() as conn:
        stored = await repo.get_job(conn, job["id"])
    assert stored is not None and stored.task is Task.TRANSLATE
    assert (stored.word_timestamps, stored.multichannel) == (True, True)
    assert (stored.prompt, stored.hotwords) == (OPTIONS["prompt"], OPTIONS["hotwords"])


async def test_options_left_out_are_echoed_as_their_defaults(
    english: httpx.AsyncClient,
) -> None:
    job = (await english.post("/v1/jobs", json=JOB)).json()
    assert {name: job[name] for name in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize(
    ("given", "stored"), [("auto", None), ("AUTO", None), ("de", "de"), ("pt-BR", "pt")]
)
async def test_language_auto_means_detect_and_a_region_is_dropped(
    multilingual: httpx.AsyncClient, given: str, stored: str | None
) -> None:
    job = (await multilingual.post("/v1/jobs", json={**JOB, "language": given})).json()
    assert job["language"] == stored


BAD_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown task": ({"task": "summarize"}, "task"),
    "task not a string": ({"task": 1}, "task"),
    "word_timestamps a string": ({"word_timestamps": "yes"}, "word_timestamps"),
    "multichannel a number": ({"multichannel": 1}, "multichannel"),
    "unknown language": ({"language": "xx"}, "language"),
    "language a sentence": ({"language": "english!!"}, "language"),
    "prompt over MAX_PROMPT_CHARS": ({"prompt": "p" * 101}, "prompt"),
    "hotwords over MAX_PROMPT_CHARS": ({"hotwords": "h" * 101}, "hotwords"),
    "prompt with NUL": ({"prompt": "a\x00b"}, "prompt"),
    "hotwords not a string": ({"hotwords": ["ComfyUI"]}, "hotwords"),
    "speakers out of range": ({"speakers": 0}, "speakers"),
}


@pytest.mark.parametrize("options", [{"diarize": True}, {"diarize": True, "speakers": 2}])
async def test_diarization_is_refused_as_not_installed(
    multilingual: httpx.AsyncClient, options: dict[str, Any]
) -> None:
    body = problem(await multilingual.post("/v1/jobs", json={**JOB, **options}))
    (error,) = body["errors"]
    assert error["field"] == "diarize" and "not installed" in error["message"]
    assert "DIARIZATION" in error["message"]


@pytest.mark.parametrize(
    "options",
    [
        {"diarize": True, "speakers": 3},
        {"diarize": True, "min_speakers": 2, "max_speakers": 4},
        {"diarize": True, "max_speakers": 2},
        {"diarize": False},
    ],
)
async def test_diarize_and_its_speaker_counts_are_stored_and_echoed(
    diarizing: httpx.AsyncClient, engine: AsyncEngine, options: dict[str, Any]
) -> None:
    created = await diarizing.post("/v1/jobs", json={**JOB, **options})
    assert created.status_code == 202, created.text
    expected = {**{n: DEFAULTS[n] for n in DIARIZE_FIELDS}, **options}
    assert {name: created.json()[name] for name in DIARIZE_FIELDS} == expected
    async with engine.connect() as conn:
        stored = await repo.get_job(conn, created.json()["id"])
    assert stored is not None
    assert {name: getattr(stored, name) for name in DIARIZE_FIELDS} == expected


DIARIZE_FIELDS = ("diarize", "speakers", "min_speakers", "max_speakers")


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"speakers": 2}, "speakers", "with diarize only"),
        ({"max_speakers": 2}, "max_speakers", "with diarize only"),
        ({"diarize": True, "speakers": 2, "min_speakers": 1}, "speakers", "not both"),
        ({"diarize": True, "min_speakers": 3, "max_speakers": 2}, "min_speakers", "over"),
        ({"diarize": True, "multichannel": True}, "multichannel", "together"),
        ({"diarize": True, "speakers": 33}, "speakers", ""),
        ({"diarize": "yes"}, "diarize", ""),
    ],
)
async def test_a_speaker_count_that_makes_no_sense_is_422(
    diarizing: httpx.AsyncClient, options: dict[str, Any], field: str, words: str
) -> None:
    body = problem(await diarizing.post("/v1/jobs", json={**JOB, **options}))
    assert field in fields(body) or any(field in str(e) for e in body["errors"]), body
    assert words in json.dumps(body)


@pytest.mark.parametrize("name", BAD_OPTIONS)
async def test_an_invalid_option_is_422_naming_its_field(
    multilingual: httpx.AsyncClient, engine: AsyncEngine, name: str
) -> None:
    options, field = BAD_OPTIONS[name]
    response = await multilingual.post(
        "/v1/jobs",
        content=json.dumps({**JOB, **options}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert any(field in error for error in fields(problem(response))), response.text
    async with engine.connect() as conn:
        assert (await repo.list_jobs(conn, "org-test", limit=10))[0] == []


@pytest.mark.parametrize(
    ("options", "field"),
    [({"task": "translate"}, "task"), ({"language": "de"}, "language")],
)
async def test_what_an_english_only_model_cannot_do_is_refused_naming_the_model(
    english: httpx.AsyncClient, options: dict[str, str], field: str
) -> None:
    body = problem(await english.post("/v1/jobs", json={**JOB, **options}))
    (error,) = body["errors"]
    assert error["field"] == field and "tiny.en" in error["message"]


@pytest.mark.parametrize("language", ["en", "auto", None])
async def test_an_english_only_model_takes_english_or_detection(
    english: httpx.AsyncClient, language: str | None
) -> None:
    response = await english.post("/v1/jobs", json={**JOB, "language": language})
    assert response.status_code == 202, response.text


async def test_an_idempotent_replay_compares_the_options(
    multilingual: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k-options"}
    first = await multilingual.post("/v1/jobs", json={**JOB, **OPTIONS}, headers=headers)
    again = await multilingual.post("/v1/jobs", json={**JOB, **OPTIONS}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    other = {**OPTIONS, "word_timestamps": False}
    changed = await multilingual.post("/v1/jobs", json={**JOB, **other}, headers=headers)
    assert changed.status_code == 409
