"""The job status machine: statuses, allowed transitions, failure reasons.

Pure: no I/O. Every status change (a ``job.Change``, decided in ``lifecycle.py``) is
checked here and written as a compare-and-set update whose expected status comes from
:func:`allowed_from` (``repository/transitions.py``), so the rule has exactly one source.

    QUEUED -> TRIGGERED -> PROCESSING -> SUCCEEDED | FAILED | SEND_FAILED | PERMAFAILED
    FAILED -> TRIGGERED, SEND_FAILED -> TRIGGERED       (retries)
    PERMAFAILED -> QUEUED                               (an operator's requeue)
    any non-terminal -> CANCELED                        (the client)

Three edges are internal and not part of the client contract:

* ``TRIGGERED -> QUEUED``: the trigger never reached a worker (refused with 503,
  connection error); the job goes back to the queue and the attempt is not counted.
* ``TRIGGERED -> FAILED | SEND_FAILED | PERMAFAILED``: the lease of a triggered job
  expired before a worker picked it up (``WORKER_LOST``). A job out of attempts goes to
  SEND_FAILED first, so a worker delivers its ``transcription.failed`` webhook.
* ``QUEUED | FAILED | SEND_FAILED -> PERMAFAILED``: a job triggered as often as the hard
  bound allows (``retry.trigger_limit``) is stopped instead of claimed once more.

``SUCCEEDED | PERMAFAILED -> SEND_FAILED`` is also allowed: a client's redeliver
request puts a finished job back into the delivery queue; it keeps its transcript.
"""

from __future__ import annotations

import enum

from transcription_core.errors import Conflict


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    TRIGGERED = "TRIGGERED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SEND_FAILED = "SEND_FAILED"
    PERMAFAILED = "PERMAFAILED"
    CANCELED = "CANCELED"


class FailureReason(enum.StrEnum):
    DOWNLOAD_FORBIDDEN = "DOWNLOAD_FORBIDDEN"
    DOWNLOAD_NOT_FOUND = "DOWNLOAD_NOT_FOUND"
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
    MEDIA_TOO_LARGE = "MEDIA_TOO_LARGE"
    MEDIA_UNDECODABLE = "MEDIA_UNDECODABLE"
    NO_AUDIO_FOUND = "NO_AUDIO_FOUND"
    MODEL_ERROR = "MODEL_ERROR"
    WORKER_LOST = "WORKER_LOST"
    WEBHOOK_FAILED = "WEBHOOK_FAILED"

    @property
    def retried(self) -> bool:
        """Whether a job that failed for this reason is tried again (the contract's table)."""
        return self in _RETRIED_REASONS

    @property
    def needs_client(self) -> bool:
        """A failure only the client can fix (its URL expired or its asset is gone)."""
        return self in (FailureReason.DOWNLOAD_FORBIDDEN, FailureReason.DOWNLOAD_NOT_FOUND)


_RETRIED_REASONS = frozenset(
    {
        FailureReason.DOWNLOAD_FAILED,
        FailureReason.MODEL_ERROR,
        FailureReason.WORKER_LOST,
        FailureReason.WEBHOOK_FAILED,
    }
)

#: Statuses a job never leaves on its own.
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.PERMAFAILED, JobStatus.CANCELED})

#: Statuses that hold one of the ``MAX_CONCURRENT_TRANSCRIPTION_JOBS`` slots.
IN_FLIGHT = frozenset({JobStatus.TRIGGERED, JobStatus.PROCESSING})

#: Statuses that carry a failure_reason.
FAILURE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.SEND_FAILED, JobStatus.PERMAFAILED})

#: Statuses the orchestrator claims from once they are due.
CLAIMABLE = frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.SEND_FAILED})

S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.TRIGGERED, S.PERMAFAILED, S.CANCELED}),
    S.TRIGGERED: frozenset(
        {S.PROCESSING, S.QUEUED, S.FAILED, S.SEND_FAILED, S.PERMAFAILED, S.CANCELED}
    ),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.SEND_FAILED, S.PERMAFAILED, S.CANCELED}),
    S.FAILED: frozenset({S.TRIGGERED, S.PERMAFAILED, S.CANCELED}),
    S.SEND_FAILED: frozenset({S.TRIGGERED, S.PERMAFAILED, S.CANCELED}),
    S.SUCCEEDED: frozenset({S.SEND_FAILED}),
    S.PERMAFAILED: frozenset({S.QUEUED, S.SEND_FAILED}),
    S.CANCELED: frozenset(),
}
del S


class InvalidTransition(Conflict):
    """A status change the table does not allow (409 if it reaches a client)."""

    def __init__(self, from_status: JobStatus, to_status: JobStatus) -> None:
        super().__init__(f"a job cannot go from {from_status} to {to_status}")
        self.from_status = from_status
        self.to_status = to_status


def can_transition(from_status: JobStatus, to_status: JobStatus) -> bool:
    return to_status in TRANSITIONS[from_status]


def check_transition(from_status: JobStatus, to_status: JobStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``from_status -> to_status`` is allowed."""
    if not can_transition(from_status, to_status):
        raise InvalidTransition(from_status, to_status)


def sql_in(statuses: frozenset[JobStatus], column: str = "status") -> str:
    """``status IN ('A', 'B')`` as SQL text, the values inline and sorted: a partial
    index's predicate is written with it, and a query matches that index only when its
    own condition says the same with constants (a parameter of a generic plan never
    matches)."""
    return f"{column} IN ({', '.join(repr(s.value) for s in sorted(statuses))})"


def allowed_from(to_status: JobStatus) -> frozenset[JobStatus]:
    """Every status a job may be in for a move to ``to_status``: the CAS update's guard."""
    return frozenset(src for src, targets in TRANSITIONS.items() if to_status in targets)
