"""What each event of a job's life writes, as one table, without a database."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_type_hints

import pytest
import sqlalchemy as sa

from transcription_core import lifecycle, storable
from transcription_core.job import (
    JOB_COLUMNS,
    Change,
    Job,
    Message,
    NewJob,
    WebhookEvent,
    Writes,
)
from transcription_core.models import Job as JobModel
from transcription_core.retry import RetryPolicy
from transcription_core.status import FAILURE_STATUSES, FailureReason, InvalidTransition, JobStatus

S = JobStatus
R = FailureReason
SENT = WebhookEvent.SUCCEEDED
FAILURE = WebhookEvent.FAILED
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = NOW - timedelta(hours=1)


class Middle(random.Random):
    """Jitter at the middle of its range: backoffs are 3/4 of their ceiling, delivery
    waits exactly their schedule."""

    def random(self) -> float:
        return 0.5


POLICY = RetryPolicy(max_attempts=3, backoff_seconds=10, delivery_schedule=(5, 30), rng=Middle())
#: Stands for a new ``webhook-id`` in the table.
NEW_ID = "<new msg_ id>"


def job(**fields: object) -> Job:
    base, _ = lifecycle.enqueued(
        NewJob(tenant="org", media_url="https://m/a.mp3", webhook_url="https://h/t"), T0
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def secs(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


processing = job(status=S.PROCESSING, attempts=1, lease_expires_at=secs(60))
last_attempt = replace(processing, attempts=3)
failure_pending = job(
    status=S.PROCESSING,
    attempts=3,
    failure_reason=R.MODEL_ERROR,
    failure_detail="500",
    webhook_event=FAILURE,
    webhook_message_id="msg_f",
    webhook_payload="{f}",
)
transcript_pending = job(
    status=S.PROCESSING,
    attempts=2,
    deliveries=1,
    webhook_event=SENT,
    webhook_message_id="msg_s",
    webhook_payload="{s}",
)
out_of_deliveries = replace(transcript_pending, deliveries=2)
sent = Message(SENT, "msg_s", "{s}")
failure_message = Message(FAILURE, "msg_f", "{f}")

#: (event, job, decision) -> (to_status, writes, event reason, event detail)
TABLE: list[
    tuple[str, Job, Callable[[Job], Change], S, dict[str, object], str | None, str | None]
] = [
    (
        "claimed",
        job(status=S.FAILED, attempts=1, failure_reason=R.MODEL_ERROR, failure_detail="500"),
        lambda j: lifecycle.claimed(j, 60, NOW),
        S.TRIGGERED,
        {
            "attempts": 2,
            "lease_expires_at": secs(60),
            "failure_reason": None,
            "failure_detail": None,
        },
        None,
        None,
    ),
    (
        "claimed, a failure message pending",
        replace(failure_pending, status=S.SEND_FAILED, deliveries=1),
        lambda j: lifecycle.claimed(j, 60, NOW),
        S.TRIGGERED,
        {"attempts": 4, "lease_expires_at": secs(60)},
        None,
        None,
    ),
    (
        "stopped at the trigger bound",
        job(
            status=S.SEND_FAILED, attempts=7, failure_reason=R.WEBHOOK_FAILED, failure_detail="503"
        ),
        lambda j: lifecycle.stopped(j, 7, 7, NOW),  # type: ignore[return-value]
        S.PERMAFAILED,
        {
            "completed_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WEBHOOK_FAILED,
            "failure_detail": "503 (stopped after 7 triggers, the most a job gets)",
        },
        R.WEBHOOK_FAILED,
        "stopped after 7 triggers, the most a job gets",
    ),
    (
        "trigger refused",
        job(status=S.TRIGGERED, attempts=1, lease_expires_at=secs(60)),
        lambda j: lifecycle.refused(j, "the worker is full", 2.0, NOW),
        S.QUEUED,
        {
            "attempts": 0,
            "due_at": secs(2),
            "lease_expires_at": None,
            "failure_reason": None,
            "failure_detail": None,
        },
        lifecycle.TRIGGER_REFUSED,
        "the worker is full",
    ),
    (
        "started",
        job(status=S.TRIGGERED, attempts=1, lease_expires_at=secs(5)),
        lambda j: lifecycle.started(j, 120, NOW),
        S.PROCESSING,
        {"lease_expires_at": secs(120), "failure_reason": None, "failure_detail": None},
        None,
        None,
    ),
    (
        "failed, retried",
        processing,
        lambda j: lifecycle.failed(j, R.DOWNLOAD_FAILED, "HTTP 503", POLICY, NOW),
        S.FAILED,
        {
            "due_at": secs(7.5),
            "lease_expires_at": None,
            "failure_reason": R.DOWNLOAD_FAILED,
            "failure_detail": "HTTP 503",
        },
        R.DOWNLOAD_FAILED,
        "HTTP 503",
    ),
    (
        "failed for good: the failure message is due",
        processing,
        lambda j: lifecycle.failed(j, R.DOWNLOAD_NOT_FOUND, "HTTP 404", POLICY, NOW),
        S.SEND_FAILED,
        {
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.DOWNLOAD_NOT_FOUND,
            "failure_detail": "HTTP 404",
            "webhook_event": FAILURE,
            "webhook_message_id": NEW_ID,
            "webhook_payload": None,
            "deliveries": 0,
        },
        R.DOWNLOAD_NOT_FOUND,
        "HTTP 404",
    ),
    (
        "failed after the last attempt",
        last_attempt,
        lambda j: lifecycle.failed(j, R.MODEL_ERROR, "500", POLICY, NOW),
        S.SEND_FAILED,
        {
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.MODEL_ERROR,
            "failure_detail": "500",
            "webhook_event": FAILURE,
            "webhook_message_id": NEW_ID,
            "webhook_payload": None,
            "deliveries": 0,
        },
        R.MODEL_ERROR,
        "500",
    ),
    (
        "delivered a transcript",
        replace(transcript_pending, failure_reason=R.WEBHOOK_FAILED, failure_detail="503"),
        lambda j: lifecycle.delivered(j, sent, NOW),
        S.SUCCEEDED,
        {
            "completed_at": NOW,
            "delivered_at": NOW,
            "lease_expires_at": None,
            "failure_reason": None,
            "failure_detail": None,
            "webhook_event": SENT,
            "webhook_message_id": "msg_s",
            "webhook_payload": "{s}",
        },
        None,
        None,
    ),
    (
        "delivered a failure message",
        failure_pending,
        lambda j: lifecycle.delivered(j, failure_message, NOW),
        S.PERMAFAILED,
        {
            "completed_at": NOW,
            "delivered_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.MODEL_ERROR,
            "failure_detail": "500",
            "webhook_event": FAILURE,
            "webhook_message_id": "msg_f",
            "webhook_payload": "{f}",
        },
        R.MODEL_ERROR,
        "500",
    ),
    (
        "a transcript's delivery failed",
        transcript_pending,
        lambda j: lifecycle.undelivered(j, sent, "HTTP 503", None, POLICY, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 2,
            "due_at": secs(30),
            "lease_expires_at": None,
            "failure_reason": R.WEBHOOK_FAILED,
            "failure_detail": "HTTP 503",
            "webhook_event": SENT,
            "webhook_message_id": "msg_s",
            "webhook_payload": "{s}",
        },
        R.WEBHOOK_FAILED,
        "HTTP 503",
    ),
    (
        "a delivery failed, the receiver asks for longer",
        replace(transcript_pending, deliveries=0),
        lambda j: lifecycle.undelivered(j, sent, "HTTP 429", 60.0, POLICY, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 1,
            "due_at": secs(60),
            "lease_expires_at": None,
            "failure_reason": R.WEBHOOK_FAILED,
            "failure_detail": "HTTP 429",
            "webhook_event": SENT,
            "webhook_message_id": "msg_s",
            "webhook_payload": "{s}",
        },
        R.WEBHOOK_FAILED,
        "HTTP 429",
    ),
    (
        "a transcript's last delivery failed",
        out_of_deliveries,
        lambda j: lifecycle.undelivered(j, sent, "HTTP 503", None, POLICY, NOW),
        S.PERMAFAILED,
        {
            "deliveries": 3,
            "due_at": NOW,
            "completed_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WEBHOOK_FAILED,
            "failure_detail": "HTTP 503",
            "webhook_event": SENT,
            "webhook_message_id": "msg_s",
            "webhook_payload": "{s}",
        },
        R.WEBHOOK_FAILED,
        "HTTP 503",
    ),
    (
        "a failure message's delivery failed: the job keeps its failure",
        failure_pending,
        lambda j: lifecycle.undelivered(j, failure_message, "HTTP 503", None, POLICY, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 1,
            "due_at": secs(5),
            "lease_expires_at": None,
            "failure_reason": R.MODEL_ERROR,
            "failure_detail": "500",
            "webhook_event": FAILURE,
            "webhook_message_id": "msg_f",
            "webhook_payload": "{f}",
        },
        R.MODEL_ERROR,
        "HTTP 503",
    ),
    (
        "unexpected error before a message: WORKER_LOST",
        processing,
        lambda j: lifecycle.unexpected(j, "unexpected error: Boom", POLICY, NOW),
        S.FAILED,
        {
            "due_at": secs(7.5),
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "unexpected error: Boom",
        },
        R.WORKER_LOST,
        "unexpected error: Boom",
    ),
    (
        "unexpected error while delivering: a failed delivery",
        transcript_pending,
        lambda j: lifecycle.unexpected(j, "unexpected error: Boom", POLICY, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 2,
            "due_at": secs(30),
            "lease_expires_at": None,
            "failure_reason": R.WEBHOOK_FAILED,
            "failure_detail": "unexpected error: Boom",
            "webhook_event": SENT,
            "webhook_message_id": "msg_s",
            "webhook_payload": "{s}",
        },
        R.WEBHOOK_FAILED,
        "unexpected error: Boom",
    ),
    (
        "handed back by a worker shutting down",
        processing,
        lambda j: lifecycle.handed_back(j, NOW),
        S.FAILED,
        {
            "attempts": 0,
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "the worker shut down before finishing",
        },
        R.WORKER_LOST,
        "the worker shut down before finishing",
    ),
    (
        "lease expired, retried",
        processing,
        lambda j: lifecycle.lease_expired(j, POLICY, NOW),
        S.FAILED,
        {
            "due_at": secs(7.5),
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "lease expired while PROCESSING (attempt 1)",
        },
        R.WORKER_LOST,
        "lease expired while PROCESSING (attempt 1)",
    ),
    (
        "lease expired after the last attempt: the failure message is due",
        replace(last_attempt, status=S.TRIGGERED),
        lambda j: lifecycle.lease_expired(j, POLICY, NOW),
        S.SEND_FAILED,
        {
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "lease expired while TRIGGERED (attempt 3)",
            "webhook_event": FAILURE,
            "webhook_message_id": NEW_ID,
            "webhook_payload": None,
            "deliveries": 0,
        },
        R.WORKER_LOST,
        "lease expired while TRIGGERED (attempt 3)",
    ),
    (
        "lease expired while delivering: a failed delivery",
        out_of_deliveries,
        lambda j: lifecycle.lease_expired(j, POLICY, NOW),
        S.PERMAFAILED,
        {
            "deliveries": 3,
            "due_at": NOW,
            "completed_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "lease expired while PROCESSING (attempt 2)",
        },
        R.WORKER_LOST,
        "lease expired while PROCESSING (attempt 2)",
    ),
    (
        "cancelled",
        job(status=S.FAILED, attempts=1, failure_reason=R.MODEL_ERROR, failure_detail="500"),
        lambda j: lifecycle.cancelled(j, NOW),
        S.CANCELED,
        {
            "completed_at": NOW,
            "lease_expires_at": None,
            "failure_reason": None,
            "failure_detail": None,
        },
        None,
        "canceled by the client",
    ),
    (
        "redelivered: the same message",
        replace(
            failure_pending, status=S.PERMAFAILED, deliveries=3, completed_at=T0, delivered_at=T0
        ),
        lambda j: lifecycle.redelivered(j, False, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 0,
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.MODEL_ERROR,
            "failure_detail": "500",
            "webhook_event": FAILURE,
            "webhook_message_id": "msg_f",
            "webhook_payload": "{f}",
        },
        R.MODEL_ERROR,
        "redelivery requested",
    ),
    (
        "redelivered: a transcript never sent gets its first message",
        job(status=S.PERMAFAILED, attempts=3, failure_reason=R.WORKER_LOST, failure_detail="x"),
        lambda j: lifecycle.redelivered(j, True, NOW),
        S.SEND_FAILED,
        {
            "deliveries": 0,
            "due_at": NOW,
            "lease_expires_at": None,
            "failure_reason": R.WORKER_LOST,
            "failure_detail": "x",
            "webhook_event": SENT,
            "webhook_message_id": NEW_ID,
            "webhook_payload": None,
        },
        R.WORKER_LOST,
        "redelivery requested",
    ),
    (
        "requeued",
        replace(failure_pending, status=S.PERMAFAILED, deliveries=1, completed_at=T0),
        lambda j: lifecycle.requeued(j, NOW),
        S.QUEUED,
        {
            "attempts": 0,
            "deliveries": 0,
            "due_at": NOW,
            "completed_at": None,
            "delivered_at": None,
            "lease_expires_at": None,
            "failure_reason": None,
            "failure_detail": None,
            "webhook_event": None,
            "webhook_message_id": None,
            "webhook_payload": None,
        },
        None,
        "requeued after MODEL_ERROR",
    ),
]


@pytest.mark.parametrize(
    ("before", "decide", "to_status", "writes", "reason", "detail"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_what_each_event_writes(
    before: Job,
    decide: Callable[[Job], Change],
    to_status: S,
    writes: dict[str, object],
    reason: str | None,
    detail: str | None,
) -> None:
    change = decide(before)
    written: dict[str, object] = dict(change.writes)
    if writes.get("webhook_message_id") == NEW_ID:
        assert str(written["webhook_message_id"]).startswith("msg_")
        assert written["webhook_message_id"] != before.webhook_message_id
        written["webhook_message_id"] = NEW_ID
    assert (change.to_status, written) == (to_status, {"updated_at": NOW, **writes})
    event = change.event
    assert (event.from_status, event.to_status, event.reason, event.detail, event.at) == (
        before.status,
        to_status,
        reason,
        detail,
        NOW,
    )
    # The history records the job's attempts after the change, and the status machine
    # allows the move from where the job is.
    assert event.attempt == change.after.attempts
    assert change.expected_status == before.status


@pytest.mark.parametrize(
    ("before", "decide"), [row[1:3] for row in TABLE], ids=[r[0] for r in TABLE]
)
def test_the_failure_fields_say_what_the_job_is_now(
    before: Job, decide: Callable[[Job], Change]
) -> None:
    after = decide(before).after
    assert (after.failure_reason is None) == (after.failure_detail is None)
    if after.status in FAILURE_STATUSES:
        assert after.failure_reason is not None or after.webhook_event == SENT
    elif after.status in (S.SUCCEEDED, S.CANCELED):
        assert after.failure_reason is None
    else:
        assert after.failure_reason is None or after.pending_failure_message


def test_a_job_not_spent_is_not_stopped() -> None:
    assert lifecycle.stopped(job(status=S.FAILED, attempts=9), 6, 7, NOW) is None


def test_a_failure_and_its_message_delivered_at_once_are_one_change() -> None:
    failure = lifecycle.failed(last_attempt, R.MODEL_ERROR, "500", POLICY, NOW)
    view = failure.after
    message = Message(FAILURE, view.webhook_message_id, "{f}")
    change = failure.then(lifecycle.delivered(view, message, NOW))
    assert change.job == last_attempt and change.expected_status == S.PROCESSING
    assert change.to_status == S.PERMAFAILED
    assert (change.after.failure_reason, change.after.failure_detail) == (R.MODEL_ERROR, "500")
    assert change.after.webhook_payload == "{f}" and change.after.delivered_at == NOW
    assert (change.event.from_status, change.event.reason) == (S.PROCESSING, R.MODEL_ERROR)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.PERMAFAILED, S.CANCELED])
def test_a_finished_job_cannot_be_cancelled(status: S) -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.cancelled(job(status=status, completed_at=T0), NOW)


def test_a_job_being_redelivered_cannot_be_cancelled() -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.cancelled(job(status=S.SEND_FAILED, completed_at=T0), NOW)


@pytest.mark.parametrize("status", [s for s in S if s not in lifecycle.REDELIVERABLE])
def test_only_a_finished_job_is_redelivered(status: S) -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.redelivered(job(status=status), True, NOW)


def test_a_change_the_status_machine_forbids_is_refused_at_the_write() -> None:
    change = lifecycle.started(job(status=S.QUEUED), 60, NOW)
    with pytest.raises(InvalidTransition):
        _ = change.expected_status


def test_a_job_is_its_row() -> None:
    new, event = lifecycle.enqueued(
        NewJob("org", "https://m", "https://h", metadata={"a": [1]}), NOW
    )
    assert (event.from_status, event.to_status, event.attempt) == (None, S.QUEUED, 0)
    assert JOB_COLUMNS == tuple(sa.inspect(JobModel).local_table.c.keys())
    full = replace(new, failure_reason=R.MODEL_ERROR, webhook_event=FAILURE, lease_expires_at=NOW)
    row = {
        name: str(value) if name in ("status", "failure_reason", "webhook_event") else value
        for name, value in full.columns().items()
    }
    assert Job.from_row(row) == full
    with pytest.raises(TypeError):
        Job.from_row({**row, "attempts": "3"})


def test_what_a_change_writes_is_typed_as_the_job_types_that_column() -> None:
    """``Writes`` (a partial update: a TypedDict) names columns of ``Job`` (a dataclass):
    Python's typing cannot derive one from the other, so this keeps the two from drifting
    (mypy checks ``replace(job, **writes)`` too)."""
    columns = get_type_hints(Job, localns=vars(storable))  # JsonObject's "Json"
    writes = get_type_hints(Writes)
    assert writes == {name: columns[name] for name in writes}
    assert "status" not in writes  # the change's own field, checked by the status machine
