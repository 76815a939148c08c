"""The worker: takes triggers, holds each job's lease, and finishes every attempt.

An attempt goes TRIGGERED -> PROCESSING (compare-and-set at the trigger's attempt), keeps
its lease alive while it works, and ends in one more compare-and-set:

* no transcript yet and no failure message pending: transcribe (``pipeline.py``), store
  the transcript, then deliver ``transcription.succeeded``;
* a transcript stored (a delivery retry, a redelivery): deliver it again, never
  transcribe again;
* a failure message pending (``transcription.failed``): deliver it.

Delivered: SUCCEEDED (or PERMAFAILED for a failure message). Not delivered: SEND_FAILED,
due on the webhook schedule, then PERMAFAILED (``WEBHOOK_FAILED`` for a transcript).
A transcription failure is retried as FAILED while the policy allows, else the client
gets a ``transcription.failed`` message. If the lease is lost (the job was canceled, or
presumed lost and retried elsewhere) the attempt stops and writes nothing.

An exception nobody expected is a recorded failure naming its type, never a silent
retry: while delivering, a failed delivery (``deliveries`` grows, the schedule runs
out); before, a ``WORKER_LOST`` transcription failure. What an attempt ends as is
decided by the pure functions :func:`failure_outcome`, :func:`delivery_outcome` and
:func:`unexpected_outcome`; the worker only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from transcriber_service import metrics
from transcriber_service.errors import JobFailure, describe
from transcriber_service.pipeline import Pipeline
from transcriber_service.settings import TranscriberSettings
from transcriber_service.webhooks import Delivery, WebhookSender, message_body
from transcription_core import repository as repo
from transcription_core.models import JobRow, utcnow
from transcription_core.retry import decide_delivery_retry, decide_retry
from transcription_core.schemas import JobResource
from transcription_core.settings import JobPolicySettings
from transcription_core.status import FailureReason, JobStatus

log = logging.getLogger(__name__)
S = JobStatus

#: How long the final write of an attempt keeps trying while the database is down.
FINAL_WRITE_PATIENCE_SECONDS = 60.0


@dataclass
class Outcome:
    """How an attempt ends: the final compare-and-set's target and values."""

    status: JobStatus
    reason: str | None = None
    detail: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


# --- the decisions: pure functions of the job and of what happened ------------------


def failure_outcome(job: JobRow, failure: JobFailure, policy: JobPolicySettings) -> Outcome:
    """A transcription failure: FAILED, due after a backoff, while the policy retries it;
    else the client's failure message becomes due (SEND_FAILED, due now, a new
    ``webhook-id``), which the attempt that failed usually sends at once."""
    decision = decide_retry(
        failure.reason, job["attempts"], policy.max_attempts, policy.retry_backoff_seconds
    )
    if decision.retried:
        due = utcnow() + timedelta(seconds=decision.delay_seconds or 0)
        return Outcome(S.FAILED, failure.reason, failure.detail, {"due_at": due})
    return Outcome(
        S.SEND_FAILED,
        failure.reason,
        failure.detail,
        {
            "due_at": utcnow(),
            "webhook_event": repo.FAILED_EVENT,
            "webhook_message_id": repo.new_message_id(),
            "webhook_payload": None,
            "deliveries": 0,
        },
    )


def delivery_outcome(
    job: JobRow,
    event: str,
    delivery: Delivery,
    policy: JobPolicySettings,
    message_id: str | None,
    payload: str | None,
) -> Outcome:
    """One delivery of ``event``'s message (``message_id``, ``payload``: ``None`` until it
    could be built) and what it makes of the job: delivered, SUCCEEDED (PERMAFAILED for a
    failure message); else one more failed delivery on the webhook schedule, then
    PERMAFAILED. ``deliveries`` only ever grows here."""
    keep: dict[str, Any] = {
        "webhook_event": event,
        "webhook_message_id": message_id,
        "webhook_payload": payload,
    }
    if delivery.delivered:
        done = {**keep, "delivered_at": utcnow()}
        if event == repo.SUCCEEDED_EVENT:  # no earlier attempt's failure on this event
            return Outcome(S.SUCCEEDED, None, None, done)
        return Outcome(S.PERMAFAILED, job["failure_reason"], job["failure_detail"], done)
    deliveries = job["deliveries"] + 1
    decision = decide_delivery_retry(deliveries, policy.webhook_retry_delays, delivery.retry_after)
    reason = (
        FailureReason.WEBHOOK_FAILED if event == repo.SUCCEEDED_EVENT else job["failure_reason"]
    )
    if event == repo.FAILED_EVENT:
        # The job keeps the failure the client must hear about; the event log says
        # why the message did not get through.
        keep["failure_detail"] = job["failure_detail"]
    due = utcnow() + timedelta(seconds=decision.delay_seconds or 0)
    return Outcome(
        decision.status, reason, delivery.detail, {**keep, "deliveries": deliveries, "due_at": due}
    )


def unexpected_outcome(job: JobRow, exc: Exception, policy: JobPolicySettings) -> Outcome:
    """An exception nobody expected ended the attempt: a recorded failure naming it. With a
    message pending it is a failed delivery of that message (on the webhook schedule);
    before, a transcription failure (``WORKER_LOST``, retried as the policy says)."""
    detail = f"unexpected error: {describe(exc)}"
    event = job["webhook_event"]
    if event is not None:
        delivery = Delivery(False, None, None, detail, 0.0)
        return delivery_outcome(
            job, event, delivery, policy, job["webhook_message_id"], job["webhook_payload"]
        )
    return failure_outcome(job, JobFailure(FailureReason.WORKER_LOST, detail), policy)


def message_payload(job: JobRow, event: str, transcript: dict[str, Any] | None) -> str:
    """The JSON body of ``event``'s message: the job as it will be once delivered."""
    now = utcnow()
    final: dict[str, Any] = {"status": S.PERMAFAILED, "updated_at": now, "completed_at": now}
    if event == repo.SUCCEEDED_EVENT:  # as SUCCEEDED will be: no earlier attempt's failure
        final |= {"status": S.SUCCEEDED, "failure_reason": None, "failure_detail": None}
    resource = JobResource.from_row({**job, **final}, transcript).model_dump(mode="json")
    return message_body(event, resource).decode()


class LeaseLost(Exception):
    """Another writer moved the job: this attempt must stop and write nothing."""


class Worker:
    def __init__(
        self,
        engine: AsyncEngine,
        pipeline: Pipeline,
        webhooks: WebhookSender,
        settings: TranscriberSettings,
        actor: str = "transcriber",
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.webhooks = webhooks
        self.settings = settings
        self.actor = actor
        self.active: dict[str, asyncio.Task[None]] = {}
        self.active_attempts: dict[str, int] = {}
        self.accepting = True

    # --- triggers ---------------------------------------------------------------------

    def accept(self, job_id: str, attempt: int) -> bool:
        """Start the attempt in the background; ``False`` when this worker is full."""
        if job_id in self.active:
            # The same attempt again is a duplicate: it is running. Another attempt of
            # a job still running here (its lease ran out) is refused, so the
            # orchestrator requeues it instead of waiting out another lease.
            return self.active_attempts.get(job_id) == attempt
        if not self.accepting or len(self.active) >= self.settings.worker_max_jobs:
            metrics.TRIGGERS_REFUSED.inc()
            return False
        task = asyncio.create_task(self.run_attempt(job_id, attempt), name=f"job-{job_id}")
        self.active[job_id] = task
        self.active_attempts[job_id] = attempt
        metrics.JOBS_ACTIVE.set(len(self.active))

        def done(_task: asyncio.Task[None]) -> None:
            self.active.pop(job_id, None)
            self.active_attempts.pop(job_id, None)
            metrics.JOBS_ACTIVE.set(len(self.active))

        task.add_done_callback(done)
        return True

    async def drain(self, grace_seconds: float) -> None:
        """Stop accepting; give running attempts ``grace_seconds``, then hand them back."""
        self.accepting = False
        tasks = list(self.active.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- one attempt ------------------------------------------------------------------

    async def run_attempt(self, job_id: str, attempt: int) -> None:
        lease = timedelta(seconds=self.settings.lease_seconds)
        async with self.engine.begin() as conn:
            job = await repo.transition(
                conn,
                job_id,
                from_status=S.TRIGGERED,
                to_status=S.PROCESSING,
                attempt=attempt,
                actor=self.actor,
                lease_expires_at=utcnow() + lease,
            )
        if job is None:
            log.info(
                "trigger for a job no longer TRIGGERED at this attempt",
                extra={"job_id": job_id, "action": "start"},
            )
            return
        metrics.ATTEMPTS.inc()
        work = asyncio.create_task(self._work(job))
        heartbeat = asyncio.create_task(self._keep_lease(job_id, attempt, work))
        try:
            outcome = await work
        except LeaseLost:
            log.warning("lease lost; stopping", extra={"job_id": job_id, "action": "lease"})
            return
        except asyncio.CancelledError:
            if heartbeat.done() and heartbeat.result() is False:
                log.warning("lease lost; stopped", extra={"job_id": job_id, "action": "lease"})
                return
            # A rollout or scale-down: hand the job back for another worker, at once,
            # without counting this attempt (its saved chunks are kept).
            outcome = Outcome(
                S.FAILED,
                FailureReason.WORKER_LOST,
                "the worker shut down before finishing",
                {"due_at": utcnow(), "attempts": attempt - 1},
            )
            await asyncio.shield(self._finish(job, outcome))
            raise
        except Exception as exc:
            log.exception("attempt crashed", extra={"job_id": job_id, "action": "crash"})
            outcome = unexpected_outcome(job, exc, self.settings)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await asyncio.shield(self._finish(job, outcome))

    async def _keep_lease(self, job_id: str, attempt: int, work: asyncio.Task[Any]) -> bool:
        """Renew the lease every third of it; cancel the work if it is lost."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.engine.begin() as conn:
                    kept = await repo.renew_lease(
                        conn, job_id, attempt, self.settings.lease_seconds
                    )
            except Exception:
                log.exception(
                    "lease renewal failed; will retry", extra={"job_id": job_id, "action": "lease"}
                )
                continue
            if not kept:
                work.cancel()
                return False

    async def _work(self, job: JobRow) -> Outcome:
        async with self.engine.connect() as conn:
            transcript = await repo.get_transcript(conn, job["id"])
        if transcript is None and job["webhook_event"] == repo.FAILED_EVENT:
            return await self._deliver(job, repo.FAILED_EVENT, None)
        if transcript is None:
            try:
                transcript = await self.pipeline.transcribe(job)
            except JobFailure as failure:
                return await self._transcription_failed(job, failure)
            async with self.engine.begin() as conn:
                await repo.save_transcript(conn, job["id"], transcript)
        return await self._deliver(job, repo.SUCCEEDED_EVENT, transcript)

    async def _transcription_failed(self, job: JobRow, failure: JobFailure) -> Outcome:
        log.info("attempt failed: %s", failure, extra={"job_id": job["id"], "action": "fail"})
        outcome = failure_outcome(job, failure, self.settings)
        if outcome.status == S.FAILED:
            return outcome
        failed_job = {
            **job,
            "status": S.PERMAFAILED,
            "failure_reason": failure.reason,
            "failure_detail": failure.detail,
            **outcome.values,
        }
        return await self._deliver(failed_job, repo.FAILED_EVENT, None)

    async def _deliver(self, job: JobRow, event: str, transcript: dict[str, Any] | None) -> Outcome:
        """Send ``event``'s message once. Whatever goes wrong on the way (the message
        cannot be built, the URL makes a library raise) is a failed delivery."""
        same_message = job["webhook_event"] == event and job["webhook_message_id"] is not None
        message_id = job["webhook_message_id"] if same_message else repo.new_message_id()
        payload = job["webhook_payload"] if same_message else None
        try:
            if payload is None:
                payload = message_payload(job, event, transcript)
            async with self.engine.begin() as conn:
                if not await repo.set_webhook_message(
                    conn, job["id"], job["attempts"], event, message_id, payload
                ):
                    raise LeaseLost(job["id"])
                secret = await repo.tenant_webhook_secret(conn, job["tenant"])
            delivery = await self.webhooks.send(
                job["webhook_url"], secret or "", message_id, payload.encode()
            )
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("message not sent", extra={"job_id": job["id"], "action": "deliver"})
            delivery = Delivery(False, None, None, f"webhook not sent: {describe(exc)}", 0.0)
        metrics.WEBHOOK_LATENCY.observe(delivery.seconds)
        metrics.WEBHOOK_DELIVERIES.labels(
            event, "delivered" if delivery.delivered else "failed"
        ).inc()
        return delivery_outcome(job, event, delivery, self.settings, message_id, payload)

    @retry(
        retry=retry_if_exception_type((DBAPIError, OSError)),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        stop=stop_after_delay(FINAL_WRITE_PATIENCE_SECONDS),
        reraise=True,
    )
    async def _finish(self, job: JobRow, outcome: Outcome) -> None:
        """The attempt's last compare-and-set, retried while the database is unreachable
        (if it stays down, the lease expires and the job is retried: nothing is lost)."""
        async with self.engine.begin() as conn:
            moved = await repo.transition(
                conn,
                job["id"],
                from_status=S.PROCESSING,
                to_status=outcome.status,
                attempt=job["attempts"],
                actor=self.actor,
                reason=outcome.reason,
                detail=outcome.detail,
                **outcome.values,
            )
        if moved is None:
            log.warning(
                "the job moved on while we worked; outcome dropped",
                extra={"job_id": job["id"], "action": "finish"},
            )
            return
        metrics.JOBS_ENDED.labels(outcome.status, outcome.reason or "").inc()
        log.info(
            "attempt ended %s",
            outcome.status,
            extra={"job_id": job["id"], "action": "finish", "reason": outcome.reason},
        )
