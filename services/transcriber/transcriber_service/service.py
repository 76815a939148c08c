"""The worker: takes triggers, holds each job's lease, and finishes every attempt.

An attempt goes TRIGGERED -> PROCESSING (compare-and-set at the trigger's attempt), keeps
its lease alive while it works, and ends in one more compare-and-set:

* no transcript yet and no failure message pending: transcribe (``pipeline.py``), store
  the transcript, then deliver ``transcription.succeeded``;
* a transcript stored (a delivery retry, a redelivery): deliver it again, never
  transcribe again;
* a failure message pending (``transcription.failed``): deliver it.

What each ending writes is decided in ``transcription_core.lifecycle`` (``failed``,
``delivered``, ``undelivered``, ``unexpected``, ``handed_back``); the worker does the
I/O around those decisions. If the lease is lost (the job was canceled, or presumed lost
and retried elsewhere) the attempt stops and writes nothing. An exception nobody
expected is a recorded failure naming its type, never a silent retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from transcriber_service import metrics
from transcriber_service.errors import JobFailure, describe
from transcriber_service.pipeline import Pipeline
from transcriber_service.settings import TranscriberSettings
from transcriber_service.webhooks import Delivery, WebhookSender, message_body
from transcription_core import lifecycle
from transcription_core import repository as repo
from transcription_core.errors import TranscriptionError
from transcription_core.job import Change, Job, Message, WebhookEvent
from transcription_core.models import utcnow
from transcription_core.schemas import JobResource
from transcription_core.storable import JsonObject

log = logging.getLogger(__name__)

#: How long the final write of an attempt keeps trying while the database is down.
FINAL_WRITE_PATIENCE_SECONDS = 60.0


def message_payload(job: Job, message: Message, transcript: JsonObject | None) -> str:
    """The JSON body of ``message``: the job as it will be once the message is delivered."""
    final = lifecycle.delivered(job, message, utcnow()).after
    resource = JobResource.from_job(final, transcript).model_dump(mode="json")
    return message_body(message.event, resource).decode()


class LeaseLost(TranscriptionError):
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
        self.policy = settings.retry_policy
        self.actor = actor
        self.active: dict[str, asyncio.Task[None]] = {}
        self.active_attempts: dict[str, int] = {}
        #: Attempts' last writes, shielded from a cancel: a drain waits for them.
        self.last_writes: set[asyncio.Task[None]] = set()
        self.accepting = True
        #: Called whenever what this worker runs or takes changes (``replica.py``).
        self.on_change: Callable[[], None] = lambda: None

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
            self.on_change()

        task.add_done_callback(done)
        self.on_change()
        return True

    async def drain(self, grace_seconds: float) -> None:
        """Stop accepting; give running attempts ``grace_seconds``, then hand them back."""
        self.accepting = False
        self.on_change()
        tasks = list(self.active.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # A cancel that found an attempt writing its end left that write running: the
        # engine must outlive it (it gives up by itself after FINAL_WRITE_PATIENCE_SECONDS).
        if self.last_writes:
            await asyncio.wait(self.last_writes)

    # --- one attempt ------------------------------------------------------------------

    async def run_attempt(self, job_id: str, attempt: int) -> None:
        saved_chunks: list[repo.SavedChunk] = []
        async with self.engine.begin() as conn:
            job = await repo.start(conn, job_id, attempt, self.settings.lease_seconds, self.actor)
            # What earlier attempts saved (the transcript, else its chunks), read with the
            # start: no transaction of their own.
            saved = None if job is None else await repo.get_transcript(conn, job_id)
            if job is not None and saved is None:
                saved_chunks = await repo.saved_chunks(conn, job_id)
        if job is None:
            log.info(
                "trigger for job %s, no longer TRIGGERED at attempt %d",
                job_id,
                attempt,
                extra={"job_id": job_id, "action": "start"},
            )
            return
        metrics.ATTEMPTS.inc()
        work = asyncio.create_task(self._work(job, saved, saved_chunks))
        heartbeat = asyncio.create_task(self._keep_lease(job_id, attempt, work))
        try:
            change = await work
        except LeaseLost:
            log.warning(
                "job %s: lease lost; stopping", job_id, extra={"job_id": job_id, "action": "lease"}
            )
            return
        except asyncio.CancelledError:
            if heartbeat.done() and heartbeat.result() is False:
                log.warning(
                    "job %s: lease lost; stopped",
                    job_id,
                    extra={"job_id": job_id, "action": "lease"},
                )
                return
            # A rollout or scale-down: hand the job back for another worker, at once.
            await self._last_write(lifecycle.handed_back(job, utcnow()))
            raise
        except Exception as exc:
            log.exception(
                "job %s: attempt crashed", job_id, extra={"job_id": job_id, "action": "crash"}
            )
            detail = f"unexpected error: {describe(exc)}"
            change = lifecycle.unexpected(job, detail, self.policy, utcnow())
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._last_write(change)

    async def _last_write(self, change: Change) -> None:
        """:meth:`_finish`, carried through a cancel of the attempt (a drain waits for it)."""
        write = asyncio.ensure_future(self._finish(change))
        self.last_writes.add(write)
        write.add_done_callback(self.last_writes.discard)
        await asyncio.shield(write)

    async def _keep_lease(self, job_id: str, attempt: int, work: asyncio.Task[Change]) -> bool:
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

    async def _work(
        self, job: Job, transcript: JsonObject | None, saved_chunks: list[repo.SavedChunk]
    ) -> Change:
        if transcript is None and job.pending_failure_message:
            return await self._deliver(job, WebhookEvent.FAILED, None)
        if transcript is not None:
            return await self._deliver(job, WebhookEvent.SUCCEEDED, transcript)
        try:
            transcript = await self.pipeline.transcribe(job, saved_chunks)
        except JobFailure as failure:
            return await self._transcription_failed(job, failure)
        return await self._deliver(job, WebhookEvent.SUCCEEDED, transcript, store=True)

    async def _store_transcript(self, job: Job, transcript: JsonObject) -> None:
        async with self.engine.begin() as conn:
            await repo.save_transcript(conn, job.id, transcript)

    async def _transcription_failed(self, job: Job, failure: JobFailure) -> Change:
        """Retried later, or the client's failure message is due: it is sent at once."""
        log.info(
            "job %s: attempt failed: %s",
            job.id,
            failure,
            extra={"job_id": job.id, "action": "fail"},
        )
        change = lifecycle.failed(job, failure.reason, failure.detail, self.policy, utcnow())
        if not change.after.pending_failure_message:
            return change
        return change.then(await self._deliver(change.after, WebhookEvent.FAILED, None))

    async def _deliver(
        self,
        job: Job,
        event: WebhookEvent,
        transcript: JsonObject | None,
        *,
        store: bool = False,
    ) -> Change:
        """Send ``event``'s message once. Whatever goes wrong on the way (the message
        cannot be built, the URL makes a library raise) is a failed delivery.

        ``store``: ``transcript`` is new; it is saved in the transaction that records
        the message (one transaction fewer for each job), or on its own if that
        transaction does not commit (an error in it is then the attempt's)."""
        message = Message.next(job, event)
        try:
            if message.payload is None:
                message = Message(event, message.id, message_payload(job, message, transcript))
            assert message.id is not None and message.payload is not None
            async with self.engine.begin() as conn:
                if store and transcript is not None:
                    await repo.save_transcript(conn, job.id, transcript)
                if not await repo.set_webhook_message(
                    conn, job.id, job.attempts, event, message.id, message.payload
                ):
                    raise LeaseLost(job.id)
                signing = await repo.tenant_webhook_secrets(conn, job.tenant)
            store = False
            delivery = await self.webhooks.send(
                job.webhook_url, signing or "", message.id, message.payload.encode()
            )
        except LeaseLost:
            raise
        except Exception as exc:
            if store and transcript is not None:
                await self._store_transcript(job, transcript)
            log.exception(
                "job %s: message not sent", job.id, extra={"job_id": job.id, "action": "deliver"}
            )
            delivery = Delivery(False, None, None, f"webhook not sent: {describe(exc)}", 0.0)
        metrics.WEBHOOK_LATENCY.observe(delivery.seconds)
        metrics.WEBHOOK_DELIVERIES.labels(
            event, "delivered" if delivery.delivered else "failed"
        ).inc()
        if delivery.delivered:
            return lifecycle.delivered(job, message, utcnow())
        return lifecycle.undelivered(
            job, message, delivery.detail, delivery.retry_after, self.policy, utcnow()
        )

    @retry(
        retry=retry_if_exception_type((DBAPIError, OSError)),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        stop=stop_after_delay(FINAL_WRITE_PATIENCE_SECONDS),
        reraise=True,
    )
    async def _finish(self, change: Change) -> None:
        """The attempt's last compare-and-set, retried while the database is unreachable
        (if it stays down, the lease expires and the job is retried: nothing is lost)."""
        async with self.engine.begin() as conn:
            moved = await repo.apply(conn, change, self.actor)
        job_id = change.job.id
        if moved is None:
            log.warning(
                "job %s moved on while we worked; outcome dropped",
                job_id,
                extra={"job_id": job_id, "action": "finish"},
            )
            return
        metrics.JOBS_ENDED.labels(change.to_status, change.reason or "").inc()
        log.info(
            "job %s: attempt ended %s",
            job_id,
            change.to_status,
            extra={"job_id": job_id, "action": "finish", "reason": change.reason},
        )
