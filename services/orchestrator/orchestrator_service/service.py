"""The orchestrator's loop: recover lost jobs, claim as many due jobs as the transcribers
have room for (never more than the budget), trigger each at a replica with room.

One round reads the transcriber replicas' rows (``transcription_core.replicas``: each
replica reports its slots, what it runs and whether the model tier holds it back), and
claims at most their free slots, with ``min(budget, capacity)`` as the in-flight limit
(``dispatch.py``); the budget is ``MAX_CONCURRENT_TRANSCRIPTION_JOBS`` or its runtime
override. It runs in short transactions (recovery, then the claim) and sends the
triggers after the claim has committed, so a worker never sees a trigger before the
job is TRIGGERED. Each trigger goes to the replica that has the room, at the URL it
reported (or ``TRANSCRIBER_URL`` when it reported none), and its answer updates the
view of that replica. A trigger that does not reach a worker puts its job back in the
queue without counting the attempt, due after the worker's Retry-After; a job
triggered as often as the hard bound allows (``retry.trigger_limit``) is stopped
instead, PERMAFAILED. Rounds run when a notification arrives (``listener.py``: a job
enqueued or made claimable; a slot freed, by a job leaving flight or at a transcriber,
which only counts while the last round left due jobs waiting for room), when the next
retry falls due, or every ``poll_interval_seconds``. A round uses two or three short transactions:
the limit, the replicas' rows and (when there is no room) the next due time in one
read; the claim with the next due time; the refused jobs' return, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator_service import metrics
from orchestrator_service.clients import TranscriberClient, TriggerResult
from orchestrator_service.dispatch import Fleet, claim_limits
from orchestrator_service.settings import OrchestratorSettings
from transcription_core import repository as repo
from transcription_core.models import utcnow
from transcription_core.repository import replicas
from transcription_core.retry import trigger_limit

log = logging.getLogger(__name__)

#: The queue gauges (a few counting queries) are refreshed at most this often...
GAUGE_REFRESH_SECONDS = 1.0
#: A replica's row is deleted once it has not reported for this many leases (a replica
#: that stops cleanly deletes its own; it stops counting after one lease).
PRUNE_AFTER_LEASES = 10
#: ... and, when counting takes long (a backlog of a million jobs: about a second), this
#: many times as long as the last refresh took, so counting never takes more than a
#: twentieth of the time; but never less often than every GAUGE_MAX_AGE_SECONDS.
GAUGE_COST_FACTOR = 20.0
GAUGE_MAX_AGE_SECONDS = 60.0


def gauge_interval(took_seconds: float) -> float:
    """Seconds until the next gauge refresh, after one that took ``took_seconds``."""
    return min(max(GAUGE_REFRESH_SECONDS, GAUGE_COST_FACTOR * took_seconds), GAUGE_MAX_AGE_SECONDS)


async def in_flight_limit(conn: AsyncConnection, configured: int) -> int:
    """The limit in force: the operator's runtime override if there is one, else ``configured``."""
    value = await repo.get_runtime_setting(conn, repo.LIMIT_SETTING)
    if value is None:
        return configured
    try:
        return max(int(value), 0)
    except ValueError:
        log.error("ignoring runtime setting %s=%r: not an integer", repo.LIMIT_SETTING, value)
        return configured


class Orchestrator:
    def __init__(
        self,
        engine: AsyncEngine,
        transcriber: TranscriberClient,
        settings: OrchestratorSettings,
        actor: str = "orchestrator",
    ) -> None:
        self.engine = engine
        self.transcriber = transcriber
        self.settings = settings
        self.actor = actor
        self.wakeup = asyncio.Event()
        #: A notification other than a freed slot arrived since the last round began.
        self._work_notified = True
        #: The last round left due jobs unclaimed (no room or budget): only then can a
        #: freed slot make a round claim anything.
        self._waiting = True
        self.last_round_at: float | None = None
        self._next_due: datetime | None = None
        self._last_recovery = -math.inf
        self._last_gauges = -math.inf
        self._gauge_every = GAUGE_REFRESH_SECONDS
        # Leases are checked a few times per lease, not every round (rounds run on
        # every notification): at most every 5 s with the default 120 s lease.
        self._recovery_every = min(settings.lease_seconds / 4, 5.0)
        self.max_triggers = trigger_limit(settings.max_attempts, settings.webhook_retry_delays)
        self.fleet = Fleet()

    def wake(self, payload: str = "") -> None:
        """A notification: work may have come (any payload but ``SLOT_FREED``) or a
        transcriber has more room (``SLOT_FREED``)."""
        if payload != repo.SLOT_FREED:
            self._work_notified = True
        self.wakeup.set()

    def _round_needed(self) -> bool:
        """Whether the notifications since the last round began call for a round: freed
        slots alone do not, when that round left no due job waiting (a job that comes
        or falls due later is a reason of its own: a notification or the next-due
        timer)."""
        return self._work_notified or self._waiting

    async def run_round(self) -> list[repo.ClaimedJob]:
        """One round; returns the jobs whose trigger was accepted."""
        settings = self.settings
        if time.monotonic() - self._last_recovery >= self._recovery_every:
            await self._recover()
        # Few round trips: the limit and the fleet in one read, the next due time in
        # the round's last transaction (the claim's, or the refused jobs' return).
        started = utcnow()
        async with self.engine.connect() as conn:
            limit = await in_flight_limit(conn, settings.max_concurrent_transcription_jobs)
            self.fleet.refresh(await replicas.live(conn, settings.lease_seconds))
            max_in_flight, batch = claim_limits(self.fleet, limit, settings.claim_batch_size)
            next_due = None if batch > 0 else await repo.next_due_at(conn)
        metrics.IN_FLIGHT_LIMIT.set(limit)
        stopped: list[repo.StoppedJob] = []
        claimed: list[repo.ClaimedJob] = []
        if batch > 0:
            async with self.engine.begin() as conn:
                claimed = await repo.claim_due_jobs(
                    conn,
                    max_in_flight=max_in_flight,
                    lease_seconds=settings.lease_seconds,
                    actor=self.actor,
                    batch_limit=batch,
                    max_triggers=self.max_triggers,
                    stopped=stopped,
                )
                next_due = await repo.next_due_at(conn)
        for spent in stopped:
            metrics.STOPPED.inc()
            log.error(
                "job %s stopped after %d triggers (%s): something retried it beyond the policy",
                spent.id,
                spent.triggers,
                spent.reason,
                extra={"job_id": spent.id, "action": "stop"},
            )
        targets = self.fleet.plan(len(claimed))
        results = await asyncio.gather(
            *(
                self.transcriber.trigger(
                    target.url or settings.transcriber_url, job.id, job.attempt
                )
                for job, target in zip(claimed, targets, strict=True)
            )
        )
        accepted: list[tuple[repo.ClaimedJob, TriggerResult]] = []
        refused: list[tuple[repo.ClaimedJob, TriggerResult]] = []
        for job, target, result in zip(claimed, targets, results, strict=True):
            metrics.TRIGGERS.labels("accepted" if result.accepted else "refused").inc()
            (accepted if result.accepted else refused).append((job, result))
            if result.replica is not None:
                self.fleet.answered(result.replica, sent_to=target.id if target.url else None)
            elif not result.reached and target.url:
                self.fleet.unreachable(target.id)
        self._report_fleet()
        if refused:
            async with self.engine.begin() as conn:
                for job, result in refused:
                    await repo.return_to_queue(
                        conn,
                        job,
                        result.detail,
                        actor=self.actor,
                        delay_seconds=result.retry_after,
                    )
                next_due = await repo.next_due_at(conn)
            log.warning(
                "triggers refused for %d jobs (%s): %s; back in the queue for %g s",
                len(refused),
                ", ".join(job.id for job, _ in refused[:10]),
                refused[0][1].detail,
                refused[0][1].retry_after,
                extra={"action": "trigger", "refused": len(refused)},
            )
        # A job that was due before this round and is still unclaimed waits for an
        # in-flight slot (or the next batch): a freed slot notifies, so do not run again
        # at once for it. Only a job that fell due since is a reason to.
        self._waiting = next_due is not None and next_due <= started
        self._next_due = None if self._waiting else next_due
        if time.monotonic() - self._last_gauges >= self._gauge_every:
            await self._refresh_gauges()
        metrics.ROUNDS.inc()
        self.last_round_at = time.monotonic()
        return [job for job, _ in accepted]

    async def _recover(self) -> None:
        settings = self.settings
        async with self.engine.begin() as conn:
            recovered = await repo.recover_expired_leases(
                conn,
                max_attempts=settings.max_attempts,
                backoff_seconds=settings.retry_backoff_seconds,
                delivery_schedule=settings.webhook_retry_delays,
                actor=self.actor,
            )
            await replicas.prune(conn, settings.lease_seconds * PRUNE_AFTER_LEASES)
        self._last_recovery = time.monotonic()
        for job in recovered:
            metrics.RECOVERED.labels(job.to_status).inc()
            log.warning(
                "job %s lost its worker (lease expired): %s",
                job.id,
                job.to_status,
                extra={"job_id": job.id, "action": "recover"},
            )

    def _report_fleet(self) -> None:
        fleet = self.fleet
        metrics.REPLICAS.set(sum(1 for r in fleet.replicas.values() if r.accepting))
        metrics.SLOTS.set(fleet.slots)
        metrics.FREE_SLOTS.set(fleet.free)
        metrics.MODEL_SATURATED_REPLICAS.set(fleet.saturated)

    async def _refresh_gauges(self) -> None:
        started = time.monotonic()
        async with self.engine.connect() as conn:
            depth = await repo.queue_depth(conn)
            most = await repo.most_triggers(conn, self.max_triggers)
        self._last_gauges = time.monotonic()
        self._gauge_every = gauge_interval(self._last_gauges - started)
        metrics.MOST_TRIGGERS.set(most)
        metrics.TRIGGER_LIMIT.set(self.max_triggers)
        metrics.QUEUE_DEPTH.set(depth.queued)
        metrics.JOBS_IN_FLIGHT.set(depth.in_flight)
        metrics.JOBS_WAITING_RETRY.set(depth.waiting_retry)
        age = (utcnow() - depth.oldest_queued_at).total_seconds() if depth.oldest_queued_at else 0
        metrics.OLDEST_QUEUED_AGE.set(max(age, 0.0))

    def _sleep_seconds(self) -> float:
        sleep = self.settings.poll_interval_seconds
        if self._next_due is not None:
            sleep = min(sleep, max((self._next_due - utcnow()).total_seconds(), 0.0))
        return sleep

    async def run_forever(self) -> None:
        """Round after round until cancelled; a failed round is logged and retried."""
        failures = 0
        while True:
            self.wakeup.clear()
            self._work_notified = False
            try:
                claimed = await self.run_round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                self._waiting = True
                failures += 1
                log.exception("orchestrator round failed", extra={"action": "round"})
                # Back off, but no longer than the poll interval, and wake at once on a
                # notification (the LISTEN connection's reconnect sends one).
                backoff = min(0.5 * 2**failures, self.settings.poll_interval_seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=backoff)
                continue
            if claimed and len(claimed) >= self.settings.claim_batch_size:
                continue  # a full batch went out: more may be waiting
            await self._wait_for_reason()

    async def _wait_for_reason(self) -> None:
        """Until a notification that needs a round (:meth:`_round_needed`), the next due
        time or the poll interval, whichever comes first."""
        deadline = asyncio.get_running_loop().time() + self._sleep_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self.wakeup.wait()
            if asyncio.get_running_loop().time() >= deadline or self._round_needed():
                return
            self.wakeup.clear()  # a freed slot, and no job waits for one
