"""The API's resources as frozen dataclasses: :class:`Job`, :class:`Transcript` (with its
:class:`Segment` and :class:`Word`), :class:`JobPage` and :class:`WebhookEvent`.

Each keeps the JSON it was read from in ``raw``: a field the service adds later (a job
option echoed back, a segment's ``speaker``) is there before this client names it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from transcription_client.errors import UnexpectedResponse

T = TypeVar("T")


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    TRIGGERED = "TRIGGERED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SEND_FAILED = "SEND_FAILED"
    PERMAFAILED = "PERMAFAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        """Whether a job never leaves this status on its own (a client's redeliver or an
        operator's requeue still may move it)."""
        return self in TERMINAL


#: The statuses :meth:`Client.wait` stops at.
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.PERMAFAILED, JobStatus.CANCELED})

#: What ``GET /v1/jobs/{id}/transcript?format=`` answers as text.
TextFormat = Literal["text", "srt", "vtt"]
#: Every format of the transcript route.
TranscriptFormat = Literal["json", "text", "srt", "vtt"]


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float | None
    #: With ``diarize``.
    speaker: int | str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Word:
        return _build(
            lambda: cls(
                word=str(data["word"]),
                start=float(data["start"]),
                end=float(data["end"]),
                probability=_opt_float(data.get("probability")),
                speaker=_label(data.get("speaker")),
                raw=data,
            ),
            "word",
        )


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    #: With the job option ``word_timestamps``; None without it.
    words: list[Word] | None
    #: With ``diarize``: the speaker (numbered in order of first speech).
    speaker: int | str | None
    #: With ``multichannel``: the channel.
    channel: int | str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Segment:
        def build() -> Segment:
            words = data.get("words")
            return cls(
                id=int(data["id"]),
                start=float(data["start"]),
                end=float(data["end"]),
                text=str(data["text"]),
                words=None if words is None else [Word.from_json(w) for w in words],
                speaker=_label(data.get("speaker")),
                channel=_label(data.get("channel")),
                raw=data,
            )

        return _build(build, "segment")


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    language_probability: float | None
    #: Seconds; every time in the transcript is seconds from the start of the media.
    duration: float
    model: str
    segments: list[Segment]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transcript:
        return _build(
            lambda: cls(
                text=str(data["text"]),
                language=_opt_str(data.get("language")),
                language_probability=_opt_float(data.get("language_probability")),
                duration=float(data["duration"]),
                model=str(data["model"]),
                segments=[Segment.from_json(s) for s in data["segments"]],
                raw=data,
            ),
            "transcript",
        )


@dataclass(frozen=True)
class Job:
    id: str
    status: JobStatus
    external_id: str | None
    media_url: str
    webhook_url: str
    language: str | None
    metadata: Mapping[str, Any]
    attempts: int
    failure_reason: str | None
    failure_detail: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    #: Present in a webhook and in ``GET /v1/jobs/{id}`` once there is one; a listed job
    #: has none (read it with :meth:`Client.transcript`).
    transcript: Transcript | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        def build() -> Job:
            transcript = data.get("transcript")
            return cls(
                id=str(data["id"]),
                status=JobStatus(data["status"]),
                external_id=_opt_str(data.get("external_id")),
                media_url=str(data["media_url"]),
                webhook_url=str(data["webhook_url"]),
                language=_opt_str(data.get("language")),
                metadata=dict(data.get("metadata") or {}),
                attempts=int(data["attempts"]),
                failure_reason=_opt_str(data.get("failure_reason")),
                failure_detail=_opt_str(data.get("failure_detail")),
                created_at=_time(data["created_at"]),
                updated_at=_time(data["updated_at"]),
                completed_at=_opt_time(data.get("completed_at")),
                transcript=None if transcript is None else Transcript.from_json(transcript),
                raw=data,
            )

        return _build(build, "job")


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    #: Pass as ``cursor`` for the next page; None at the end.
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobPage:
        return _build(
            lambda: cls(
                jobs=[Job.from_json(job) for job in data["jobs"]],
                next_cursor=_opt_str(data.get("next_cursor")),
            ),
            "page of jobs",
        )


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook message."""

    #: ``transcription.succeeded`` or ``transcription.failed``.
    type: str
    timestamp: datetime
    #: The job, transcript included (None for a failed job).
    job: Job
    #: The ``webhook-id`` header: the same on every retry and redelivery of one message,
    #: so a receiver can drop duplicates by it.
    webhook_id: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], webhook_id: str) -> WebhookEvent:
        return _build(
            lambda: cls(
                type=str(data["type"]),
                timestamp=_time(data["timestamp"]),
                job=Job.from_json(data["data"]),
                webhook_id=webhook_id,
                raw=data,
            ),
            "webhook message",
        )


def _build(build: Callable[[], T], what: str) -> T:
    try:
        result = build()
    except UnexpectedResponse:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponse(f"not a {what} of the API: {type(exc).__name__}: {exc}") from exc
    return result


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _opt_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _label(value: Any) -> int | str | None:
    """A speaker or a channel: a number as the contract has it, a name kept as it is."""
    if value is None or isinstance(value, str):
        return value
    return int(value)
