"""A job's life: each event of it as a pure decision of what the job becomes.

Pure: no I/O. Each event is a function of the job as it is now (a :class:`~job.Job`),
the retry policy where one applies, and the time; it returns a :class:`~job.Change`:
the status the job moves to, every column the move writes, and the row it adds to the
job's history. The repository applies a change as one compare-and-set
(``repository/transitions.py``); this module alone decides what it writes, so "what
does a failed delivery write?" has one answer (``tests/unit/test_lifecycle.py`` has them
all, as a table).

The events, in the order of a job's life, and who makes them happen:

    enqueued       (new) -> QUEUED                                   the enqueue API
    claimed        QUEUED | FAILED | SEND_FAILED -> TRIGGERED        the orchestrator
    stopped        QUEUED | FAILED | SEND_FAILED -> PERMAFAILED      the orchestrator, at
                   the trigger bound (``retry.trigger_limit``)
    refused        TRIGGERED -> QUEUED, the attempt uncounted        the orchestrator
    started        TRIGGERED -> PROCESSING                           the worker
    failed         PROCESSING -> FAILED (retried) | SEND_FAILED      the worker
    delivered      PROCESSING -> SUCCEEDED | PERMAFAILED             the worker
    undelivered    PROCESSING -> SEND_FAILED | PERMAFAILED           the worker
    unexpected     PROCESSING -> as undelivered, or as failed        the worker
    handed_back    PROCESSING -> FAILED, the attempt uncounted       the worker, stopping
    lease_expired  TRIGGERED | PROCESSING -> as undelivered, or      the orchestrator
                   as failed (``WORKER_LOST``)
    cancelled      any unfinished -> CANCELED                        the client
    redelivered    SUCCEEDED | PERMAFAILED -> SEND_FAILED            the client, an operator
    requeued       PERMAFAILED -> QUEUED, attempts from 0            an operator

Every change writes ``updated_at``, ``completed_at`` into a terminal status, and no lease
out of flight. Two rules run through the rest. The failure fields (``failure_reason``,
``failure_detail``) describe the job now: set in a failure status, kept while a
``transcription.failed`` message is still to be sent (it carries them), cleared
otherwise. And a message keeps its ``webhook-id`` and body on every retry.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from transcription_core.job import (
    Change,
    Event,
    Job,
    Message,
    NewJob,
    WebhookEvent,
    Writes,
    new_message_id,
)
from transcription_core.retry import (
    RetryDecision,
    RetryPolicy,
    decide_delivery_retry,
    decide_retry,
)
from transcription_core.status import (
    IN_FLIGHT,
    TERMINAL,
    FailureReason,
    InvalidTransition,
    JobStatus,
    check_transition,
)

S = JobStatus

#: The ``job_events.reason`` of a trigger that never reached a worker.
TRIGGER_REFUSED = "TRIGGER_REFUSED"

#: The statuses a redelivery starts from: a finished job.
REDELIVERABLE = frozenset({S.SUCCEEDED, S.PERMAFAILED})


def _change(
    job: Job,
    to_status: JobStatus,
    now: datetime,
    writes: Writes,
    reason: str | None = None,
    detail: str | None = None,
) -> Change:
    """``writes`` and what every change writes besides."""
    common: Writes = {"updated_at": now}
    if to_status in TERMINAL:
        common["completed_at"] = now
    if to_status not in IN_FLIGHT:
        common["lease_expires_at"] = None
    return Change(job, to_status, {**common, **writes}, reason, detail, now)


def _failure_unless_pending(job: Job) -> Writes:
    """Out of a failure status: no failure, unless a failure message is pending (then
    the failure fields are not written: they stay)."""
    return {} if job.pending_failure_message else {"failure_reason": None, "failure_detail": None}


def _due(now: datetime, decision: RetryDecision) -> datetime:
    return now + timedelta(seconds=decision.delay_seconds or 0)


# --- the orchestrator's events ---------------------------------------------------------


def enqueued(new: NewJob, now: datetime) -> tuple[Job, Event]:
    """A new job, QUEUED and due now, and the first row of its history."""
    job = Job(
        id=str(uuid.uuid4()),
        tenant=new.tenant,
        status=S.QUEUED,
        attempts=0,
        deliveries=0,
        external_id=new.external_id,
        media_url=new.media_url,
        webhook_url=new.webhook_url,
        language=new.language,
        metadata=new.metadata or {},
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        failure_reason=None,
        failure_detail=None,
        due_at=now,
        lease_expires_at=None,
        webhook_event=None,
        webhook_message_id=None,
        webhook_payload=None,
        delivered_at=None,
        created_at=now,
        updated_at=now,
        completed_at=None,
        task=new.task,
        word_timestamps=new.word_timestamps,
        prompt=new.prompt,
        hotwords=new.hotwords,
        multichannel=new.multichannel,
        diarize=new.diarize,
        speakers=new.speakers,
        min_speakers=new.min_speakers,
        max_speakers=new.max_speakers,
    )
    return job, Event(job.id, None, S.QUEUED, 0, None, None, now)


def claimed(job: Job, lease_seconds: float, now: datetime) -> Change:
    """Triggered: the attempt counted, a lease until a worker takes it."""
    lease = now + timedelta(seconds=lease_seconds)
    writes: Writes = {"attempts": job.attempts + 1, "lease_expires_at": lease}
    return _change(job, S.TRIGGERED, now, {**writes, **_failure_unless_pending(job)})


def stopped(job: Job, triggers: int, max_triggers: int, now: datetime) -> Change | None:
    """A due job triggered ``max_triggers`` times since it last started is stopped, not
    claimed again: PERMAFAILED with the reason it had. ``None``: it is not spent."""
    if triggers < max_triggers:
        return None
    reason = job.failure_reason or (
        FailureReason.WEBHOOK_FAILED
        if job.webhook_event == WebhookEvent.SUCCEEDED
        else FailureReason.WORKER_LOST
    )
    detail = f"stopped after {triggers} triggers, the most a job gets"
    failure_detail = f"{job.failure_detail} ({detail})" if job.failure_detail else detail
    writes: Writes = {"failure_reason": reason, "failure_detail": failure_detail}
    return _change(job, S.PERMAFAILED, now, writes, reason, detail)


def refused(job: Job, detail: str, delay_seconds: float, now: datetime) -> Change:
    """A trigger that never reached a worker: back to the queue, the attempt uncounted,
    due after ``delay_seconds`` (the worker's Retry-After). Claimed from anywhere, the
    job goes back to QUEUED: the worker tells a delivery retry by its stored transcript."""
    due = now + timedelta(seconds=delay_seconds)
    writes: Writes = {"attempts": job.attempts - 1, "due_at": due}
    return _change(
        job, S.QUEUED, now, {**writes, **_failure_unless_pending(job)}, TRIGGER_REFUSED, detail
    )


def lease_expired(job: Job, policy: RetryPolicy, now: datetime) -> Change:
    """The worker of an in-flight job is lost (``WORKER_LOST``).

    A job still to be transcribed fails as an attempt does (:func:`failed`). A job that
    was delivering a message counts the loss as a failed delivery, on the webhook
    schedule, and ends PERMAFAILED after the last.
    """
    detail = f"lease expired while {job.status} (attempt {job.attempts})"
    if job.webhook_event is None:
        return failed(job, FailureReason.WORKER_LOST, detail, policy, now)
    deliveries = job.deliveries + 1
    decision = decide_delivery_retry(deliveries, policy.delivery_schedule, rng=policy.rng)
    reason = job.failure_reason or FailureReason.WORKER_LOST
    writes: Writes = {
        "deliveries": deliveries,
        "failure_reason": reason,
        "failure_detail": detail,
        "due_at": _due(now, decision),
    }
    return _change(job, decision.status, now, writes, reason, detail)


# --- the worker's events ---------------------------------------------------------------


def started(job: Job, lease_seconds: float, now: datetime) -> Change:
    """A worker took the trigger: PROCESSING, the lease renewed."""
    writes: Writes = {"lease_expires_at": now + timedelta(seconds=lease_seconds)}
    return _change(job, S.PROCESSING, now, {**writes, **_failure_unless_pending(job)})


def failed(
    job: Job, reason: FailureReason, detail: str, policy: RetryPolicy, now: datetime
) -> Change:
    """The attempt failed: FAILED, due after a backoff, while the policy retries it; else
    the client's failure message becomes due (SEND_FAILED, due now, a new message), which
    the worker usually sends at once (this change :meth:`~job.Change.then` the
    delivery's)."""
    decision = decide_retry(
        reason, job.attempts, policy.max_attempts, policy.backoff_seconds, policy.rng
    )
    writes: Writes = {"failure_reason": reason, "failure_detail": detail}
    if decision.retried:
        writes["due_at"] = _due(now, decision)
        return _change(job, S.FAILED, now, writes, reason, detail)
    message = Message(WebhookEvent.FAILED, new_message_id())
    writes |= {"due_at": now, "deliveries": 0, **message.writes()}
    return _change(job, S.SEND_FAILED, now, writes, reason, detail)


def delivered(job: Job, message: Message, now: datetime) -> Change:
    """The message got through: SUCCEEDED for a transcript (with no earlier attempt's
    failure), PERMAFAILED with the failure it carried for a failure message."""
    writes: Writes = {**message.writes(), "delivered_at": now}
    if message.event == WebhookEvent.SUCCEEDED:
        writes |= {"failure_reason": None, "failure_detail": None}
        return _change(job, S.SUCCEEDED, now, writes)
    writes |= {"failure_reason": job.failure_reason, "failure_detail": job.failure_detail}
    return _change(job, S.PERMAFAILED, now, writes, job.failure_reason, job.failure_detail)


def undelivered(
    job: Job,
    message: Message,
    detail: str,
    retry_after: float | None,
    policy: RetryPolicy,
    now: datetime,
) -> Change:
    """The message did not get through: one more failed delivery, SEND_FAILED on the
    webhook schedule (later if the receiver asked), PERMAFAILED after the last. For a
    transcript the failure is ``WEBHOOK_FAILED``; a failure message keeps the failure it
    carries, and the history says why it did not get through."""
    deliveries = job.deliveries + 1
    decision = decide_delivery_retry(
        deliveries, policy.delivery_schedule, retry_after, rng=policy.rng
    )
    transcript = message.event == WebhookEvent.SUCCEEDED
    reason = FailureReason.WEBHOOK_FAILED if transcript else job.failure_reason
    writes: Writes = {
        **message.writes(),
        "deliveries": deliveries,
        "due_at": _due(now, decision),
        "failure_reason": reason,
        "failure_detail": detail if transcript else job.failure_detail,
    }
    return _change(job, decision.status, now, writes, reason, detail)


def unexpected(job: Job, detail: str, policy: RetryPolicy, now: datetime) -> Change:
    """An exception nobody expected ended the attempt: a recorded failure naming it. With
    a message pending, a failed delivery of it; before, a ``WORKER_LOST`` failure."""
    if job.webhook_event is None:
        return failed(job, FailureReason.WORKER_LOST, detail, policy, now)
    message = Message(job.webhook_event, job.webhook_message_id, job.webhook_payload)
    return undelivered(job, message, detail, None, policy, now)


def handed_back(job: Job, now: datetime) -> Change:
    """The worker stops (a rollout, a scale-down): the job goes back for another worker,
    due now, the attempt uncounted (its saved chunks are kept)."""
    reason, detail = FailureReason.WORKER_LOST, "the worker shut down before finishing"
    writes: Writes = {
        "failure_reason": reason,
        "failure_detail": detail,
        "due_at": now,
        "attempts": job.attempts - 1,
    }
    return _change(job, S.FAILED, now, writes, reason, detail)


# --- the client's and the operators' events --------------------------------------------


def cancelled(job: Job, now: datetime) -> Change:
    """The client's cancel, from any unfinished status. A job that has finished once
    (``completed_at`` set) stays finished, also while a redelivery is under way: that is
    :class:`InvalidTransition`, as a terminal job is."""
    if job.completed_at is not None and job.status not in TERMINAL:
        raise InvalidTransition(S.SUCCEEDED, S.CANCELED)
    check_transition(job.status, S.CANCELED)
    writes: Writes = {"failure_reason": None, "failure_detail": None}
    return _change(job, S.CANCELED, now, writes, detail="canceled by the client")


def redelivered(job: Job, has_transcript: bool, now: datetime) -> Change:
    """A finished job back into the delivery queue: SEND_FAILED, due now, deliveries from
    0. Its message keeps its ``webhook-id`` and body (a job that never had one gets its
    first); the job keeps its failure and its ``completed_at`` (it is finished, and
    :func:`cancelled` refuses it). A job not finished: :class:`InvalidTransition`."""
    if job.status not in REDELIVERABLE:
        raise InvalidTransition(job.status, S.SEND_FAILED)
    event = WebhookEvent.SUCCEEDED if has_transcript else WebhookEvent.FAILED
    writes: Writes = {
        **Message.next(job, event).writes(),
        "failure_reason": job.failure_reason,
        "failure_detail": job.failure_detail,
        "deliveries": 0,
        "due_at": now,
    }
    return _change(job, S.SEND_FAILED, now, writes, job.failure_reason, "redelivery requested")


def requeued(job: Job, now: datetime) -> Change:
    """An operator sends a PERMAFAILED job back: QUEUED, due now, a fresh set of attempts,
    no message and no failure."""
    writes: Writes = {
        "attempts": 0,
        "deliveries": 0,
        "due_at": now,
        "completed_at": None,
        "webhook_event": None,
        "webhook_message_id": None,
        "webhook_payload": None,
        "delivered_at": None,
        "failure_reason": None,
        "failure_detail": None,
    }
    return _change(job, S.QUEUED, now, writes, None, f"requeued after {job.failure_reason}")
