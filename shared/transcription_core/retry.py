"""The retry policy: pure functions that decide what a failure turns a job into.

Two kinds of retry are kept apart. A *job-level* retry (this module) is a status
change that is persisted: FAILED or SEND_FAILED with the time it is due again, or
PERMAFAILED once the attempts are used up. A transient failure *inside* one attempt
(one HTTP call to the model server) is retried in place with tenacity and never shows
up here.

Over both sits one hard bound, :func:`trigger_limit`: however the decisions above
combine, a job is triggered at most that many times between two restarts, then rests
PERMAFAILED (``claim_due_jobs`` enforces it), so no path can loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from transcription_core.status import FailureReason, JobStatus

#: The cap on one job-level backoff, whatever the attempt number.
MAX_BACKOFF_SECONDS = 3600.0

#: Triggers a job may get beyond what its policy plans for.
TRIGGER_MARGIN = 2


@dataclass(frozen=True)
class RetryPolicy:
    """The job-level retry settings (``JobPolicySettings.retry_policy``)."""

    max_attempts: int
    backoff_seconds: float
    #: The waits between webhook deliveries, one per failed delivery.
    delivery_schedule: tuple[float, ...]
    #: The jitter's source; ``None``: a fresh ``random.Random``.
    rng: random.Random | None = field(default=None, compare=False)

    @property
    def max_triggers(self) -> int:
        return trigger_limit(self.max_attempts, self.delivery_schedule)


@dataclass(frozen=True)
class RetryDecision:
    status: JobStatus
    #: Seconds from now until the job is due again; ``None`` when it is not retried.
    delay_seconds: float | None

    @property
    def retried(self) -> bool:
        return self.delay_seconds is not None


def backoff_seconds(attempt: int, base_seconds: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: base * 2**(attempt-1), times a random 0.5..1."""
    rng = rng or random.Random()
    ceiling = min(base_seconds * 2 ** max(attempt - 1, 0), MAX_BACKOFF_SECONDS)
    return float(ceiling * (0.5 + rng.random() / 2))


def decide_retry(
    reason: FailureReason,
    attempts: int,
    max_attempts: int,
    base_seconds: float,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What a transcription failure in attempt number ``attempts`` (1-based) becomes."""
    if reason.retried and attempts < max_attempts:
        return RetryDecision(JobStatus.FAILED, backoff_seconds(attempts, base_seconds, rng))
    return RetryDecision(JobStatus.PERMAFAILED, None)


def decide_delivery_retry(
    deliveries: int,
    schedule: tuple[float, ...],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What a failed webhook delivery (the ``deliveries``-th, 1-based) becomes.

    ``schedule[i]`` is the wait after the (i+1)-th failed delivery; once the schedule is
    used up the job is PERMAFAILED with ``WEBHOOK_FAILED``. The wait gets +-10 % jitter,
    and a receiver's ``Retry-After`` is honoured when it asks for longer.
    """
    if deliveries > len(schedule):
        return RetryDecision(JobStatus.PERMAFAILED, None)
    rng = rng or random.Random()
    delay = schedule[deliveries - 1] * (0.9 + rng.random() * 0.2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return RetryDecision(JobStatus.SEND_FAILED, delay)


def trigger_limit(max_attempts: int, schedule: tuple[float, ...]) -> int:
    """The most times a job is triggered between two restarts (its enqueue, a requeue, a
    redelivery), each trigger counted in ``attempts``.

    The policy plans for ``max_attempts`` transcription attempts (the first delivery of
    the result or of the failure message is part of the last one), one more trigger to
    deliver the failure message when the last attempt was lost with its worker, then
    one per wait of the webhook ``schedule``; plus :data:`TRIGGER_MARGIN`.
    """
    return max_attempts + 1 + len(schedule) + TRIGGER_MARGIN
