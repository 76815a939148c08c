"""The status machine, as one table: every pair of statuses is allowed or refused."""

from __future__ import annotations

import itertools

import pytest

from transcription_core.status import (
    CLAIMABLE,
    IN_FLIGHT,
    TERMINAL,
    FailureReason,
    InvalidTransition,
    JobStatus,
    allowed_from,
    can_transition,
    check_transition,
)

S = JobStatus
ALLOWED = {
    (S.QUEUED, S.TRIGGERED),
    (S.QUEUED, S.CANCELED),
    (S.QUEUED, S.PERMAFAILED),
    (S.TRIGGERED, S.PROCESSING),
    (S.TRIGGERED, S.QUEUED),
    (S.TRIGGERED, S.FAILED),
    (S.TRIGGERED, S.SEND_FAILED),
    (S.TRIGGERED, S.PERMAFAILED),
    (S.TRIGGERED, S.CANCELED),
    (S.PROCESSING, S.SUCCEEDED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.SEND_FAILED),
    (S.PROCESSING, S.PERMAFAILED),
    (S.PROCESSING, S.CANCELED),
    (S.FAILED, S.TRIGGERED),
    (S.FAILED, S.CANCELED),
    (S.FAILED, S.PERMAFAILED),
    (S.SEND_FAILED, S.TRIGGERED),
    (S.SEND_FAILED, S.CANCELED),
    (S.SEND_FAILED, S.PERMAFAILED),
    (S.SUCCEEDED, S.SEND_FAILED),
    (S.PERMAFAILED, S.QUEUED),
    (S.PERMAFAILED, S.SEND_FAILED),
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(S, S)))
def test_every_transition_is_allowed_or_refused(src: JobStatus, dst: JobStatus) -> None:
    if (src, dst) in ALLOWED:
        check_transition(src, dst)
        assert can_transition(src, dst)
        assert src in allowed_from(dst)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(src, dst)
        assert src not in allowed_from(dst)


def test_canceled_is_reachable_from_every_non_terminal_status() -> None:
    assert allowed_from(S.CANCELED) == frozenset(S) - TERMINAL


def test_terminal_statuses_move_only_by_requeue_or_redelivery() -> None:
    assert not any(can_transition(S.CANCELED, dst) for dst in S)
    assert {dst for dst in S if can_transition(S.SUCCEEDED, dst)} == {S.SEND_FAILED}


def test_retried_reasons_follow_the_contract() -> None:
    retried = {r for r in FailureReason if r.retried}
    assert retried == {
        FailureReason.DOWNLOAD_FAILED,
        FailureReason.MODEL_ERROR,
        FailureReason.WORKER_LOST,
        FailureReason.WEBHOOK_FAILED,
    }
    assert {r for r in FailureReason if r.needs_client} == {
        FailureReason.DOWNLOAD_FORBIDDEN,
        FailureReason.DOWNLOAD_NOT_FOUND,
    }


def test_groups() -> None:
    assert IN_FLIGHT == {S.TRIGGERED, S.PROCESSING}
    assert CLAIMABLE == {S.QUEUED, S.FAILED, S.SEND_FAILED}
    assert all(can_transition(s, S.TRIGGERED) for s in CLAIMABLE)
