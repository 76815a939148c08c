"""A job as a typed value, and a change of it: what ``lifecycle.py`` decides with.

Pure: no I/O. A :class:`Job` is one row of ``jobs``, built from a row in one place
(:meth:`Job.from_row`); services and the repository pass it, never the row. A
:class:`Change` is one status change of one job: the status it moves to, every column it
writes (:class:`Writes`) and the row it adds to the job's history (:class:`Event`); the
repository applies it as one compare-and-set.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Protocol, TypedDict, TypeVar, cast

from transcription_core.options import DecodeOptions, Task
from transcription_core.status import FailureReason, InvalidTransition, JobStatus, allowed_from
from transcription_core.storable import JsonObject

T = TypeVar("T")


class Row(Protocol):
    """A row read from the store, its columns by name (``sa.RowMapping``, a dict)."""

    def __getitem__(self, name: str, /) -> object: ...


class WebhookEvent(enum.StrEnum):
    """The type of a webhook message."""

    SUCCEEDED = "transcription.succeeded"
    FAILED = "transcription.failed"


def new_message_id() -> str:
    """A Standard Webhooks ``webhook-id``: one per message, reused on its retries."""
    return "msg_" + uuid.uuid4().hex


@dataclass(frozen=True)
class NewJob:
    """What a client asks for: the columns of a new job that are theirs."""

    tenant: str
    media_url: str
    webhook_url: str
    external_id: str | None = None
    language: str | None = None
    metadata: JsonObject | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    task: Task = Task.TRANSCRIBE
    word_timestamps: bool = False
    prompt: str | None = None
    hotwords: str | None = None
    multichannel: bool = False
    diarize: bool = False
    speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class Job:
    """One row of ``jobs``, typed; its fields are the table's columns (``models.Job``)."""

    id: str
    tenant: str
    status: JobStatus
    #: Triggers counted (one per claim), less the refused ones; 0 again after a requeue.
    attempts: int
    #: Failed deliveries of the current message.
    deliveries: int
    external_id: str | None
    media_url: str
    webhook_url: str
    language: str | None
    metadata: JsonObject
    idempotency_key: str | None
    request_hash: str | None
    failure_reason: FailureReason | None
    failure_detail: str | None
    due_at: datetime
    lease_expires_at: datetime | None
    #: The pending or last message: its type, ``webhook-id`` and body (fixed when sent).
    webhook_event: WebhookEvent | None
    webhook_message_id: str | None
    webhook_payload: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    #: The client's options (``options.py``), fixed at enqueue.
    task: Task
    word_timestamps: bool
    prompt: str | None
    hotwords: str | None
    multichannel: bool
    #: ``diarize``: speaker labels; the speaker count, exact or bounded (all optional).
    diarize: bool
    speakers: int | None
    min_speakers: int | None
    max_speakers: int | None

    @classmethod
    def from_row(cls, row: Row) -> Job:
        """The job a row of ``jobs`` holds: the one place a column is read by its name."""
        reason = _optional(row, "failure_reason", str)
        event = _optional(row, "webhook_event", str)
        return cls(
            id=_required(row, "id", str),
            tenant=_required(row, "tenant", str),
            status=JobStatus(_required(row, "status", str)),
            attempts=_required(row, "attempts", int),
            deliveries=_required(row, "deliveries", int),
            external_id=_optional(row, "external_id", str),
            media_url=_required(row, "media_url", str),
            webhook_url=_required(row, "webhook_url", str),
            language=_optional(row, "language", str),
            metadata=cast(JsonObject, _optional(row, "metadata", dict) or {}),
            idempotency_key=_optional(row, "idempotency_key", str),
            request_hash=_optional(row, "request_hash", str),
            failure_reason=None if reason is None else FailureReason(reason),
            failure_detail=_optional(row, "failure_detail", str),
            due_at=_required(row, "due_at", datetime),
            lease_expires_at=_optional(row, "lease_expires_at", datetime),
            webhook_event=None if event is None else WebhookEvent(event),
            webhook_message_id=_optional(row, "webhook_message_id", str),
            webhook_payload=_optional(row, "webhook_payload", str),
            delivered_at=_optional(row, "delivered_at", datetime),
            created_at=_required(row, "created_at", datetime),
            updated_at=_required(row, "updated_at", datetime),
            completed_at=_optional(row, "completed_at", datetime),
            task=Task(_required(row, "task", str)),
            word_timestamps=_required(row, "word_timestamps", bool),
            prompt=_optional(row, "prompt", str),
            hotwords=_optional(row, "hotwords", str),
            multichannel=_required(row, "multichannel", bool),
            diarize=_required(row, "diarize", bool),
            speakers=_optional(row, "speakers", int),
            min_speakers=_optional(row, "min_speakers", int),
            max_speakers=_optional(row, "max_speakers", int),
        )

    def columns(self) -> dict[str, object]:
        """Every column's value by its name: what an insert of this job writes."""
        return dict(vars(self))  # the fields, in order: a frozen dataclass has no others

    @property
    def decode_options(self) -> DecodeOptions:
        """The options every chunk of this job is decoded with."""
        return DecodeOptions(self.task, self.word_timestamps, self.prompt, self.hotwords)

    @property
    def pending_failure_message(self) -> bool:
        """A ``transcription.failed`` message is still to be delivered; it carries the
        failure fields, so they stay."""
        return self.webhook_event == WebhookEvent.FAILED


#: The columns of ``jobs``, by name, in order.
JOB_COLUMNS = tuple(f.name for f in fields(Job))


def _required(row: Row, name: str, kind: type[T]) -> T:
    value = row[name]
    if not isinstance(value, kind):
        raise TypeError(f"jobs.{name} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _optional(row: Row, name: str, kind: type[T]) -> T | None:
    return None if row[name] is None else _required(row, name, kind)


@dataclass(frozen=True)
class Message:
    """A webhook message: its type, ``webhook-id`` and body (``None`` until it is built)."""

    event: WebhookEvent
    id: str | None
    payload: str | None = field(default=None, repr=False)

    @classmethod
    def next(cls, job: Job, event: WebhookEvent) -> Message:
        """The message to send for ``event``: the pending one again (the same id and
        body), or a new one."""
        if job.webhook_event == event and job.webhook_message_id is not None:
            return cls(event, job.webhook_message_id, job.webhook_payload)
        return cls(event, new_message_id())

    def writes(self) -> Writes:
        return {
            "webhook_event": self.event,
            "webhook_message_id": self.id,
            "webhook_payload": self.payload,
        }


class Writes(TypedDict, total=False):
    """The columns a change writes besides ``status``; a column not here keeps its value."""

    attempts: int
    deliveries: int
    failure_reason: FailureReason | None
    failure_detail: str | None
    due_at: datetime
    lease_expires_at: datetime | None
    webhook_event: WebhookEvent | None
    webhook_message_id: str | None
    webhook_payload: str | None
    delivered_at: datetime | None
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class Event:
    """A row of a job's history (``job_events``) but its actor, which the writer adds."""

    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    #: The job's ``attempts`` after the change.
    attempt: int
    reason: str | None
    detail: str | None
    at: datetime


@dataclass(frozen=True)
class Change:
    """One status change of one job, decided on ``job``: it applies only while the job is
    still in ``job.status`` at ``job.attempts`` (a compare-and-set)."""

    job: Job
    to_status: JobStatus
    writes: Writes
    #: The event row's reason and detail.
    reason: str | None
    detail: str | None
    at: datetime

    @property
    def expected_status(self) -> JobStatus:
        """The status the compare-and-set expects: the job's, where the status machine
        allows the move from it (``status.allowed_from``); else :class:`InvalidTransition`."""
        if self.job.status not in allowed_from(self.to_status):
            raise InvalidTransition(self.job.status, self.to_status)
        return self.job.status

    @property
    def after(self) -> Job:
        """The job as the change leaves it."""
        return replace(self.job, status=self.to_status, **self.writes)

    @property
    def event(self) -> Event:
        attempt = self.writes.get("attempts", self.job.attempts)
        return Event(
            self.job.id, self.job.status, self.to_status, attempt, self.reason, self.detail, self.at
        )

    def then(self, following: Change) -> Change:
        """This change and ``following`` (decided on :attr:`after`) as one change of this
        one's job: one write, one event (``following``'s)."""
        assert following.job == self.after, "a change follows the job the one before leaves"
        return Change(
            self.job,
            following.to_status,
            {**self.writes, **following.writes},
            following.reason,
            following.detail,
            following.at,
        )
