from __future__ import annotations

import random

import pytest

from transcription_core.retry import (
    MAX_BACKOFF_SECONDS,
    TRIGGER_MARGIN,
    backoff_seconds,
    decide_delivery_retry,
    decide_retry,
    trigger_limit,
)
from transcription_core.settings import DEFAULT_WEBHOOK_RETRY_SCHEDULE, parse_schedule
from transcription_core.status import FailureReason, JobStatus


@pytest.mark.parametrize("reason", [r for r in FailureReason if r.retried])
def test_retried_failure_waits_then_is_permanent_after_the_last_attempt(
    reason: FailureReason,
) -> None:
    rng = random.Random(1)
    first = decide_retry(reason, attempts=1, max_attempts=3, base_seconds=10, rng=rng)
    second = decide_retry(reason, attempts=2, max_attempts=3, base_seconds=10, rng=rng)
    last = decide_retry(reason, attempts=3, max_attempts=3, base_seconds=10, rng=rng)
    assert first.status == second.status == JobStatus.FAILED
    assert first.delay_seconds is not None and 5 <= first.delay_seconds <= 10
    assert second.delay_seconds is not None and 10 <= second.delay_seconds <= 20
    assert last == last.__class__(JobStatus.PERMAFAILED, None)


@pytest.mark.parametrize("reason", [r for r in FailureReason if not r.retried])
def test_permanent_failure_is_never_retried(reason: FailureReason) -> None:
    decision = decide_retry(reason, attempts=1, max_attempts=3, base_seconds=10)
    assert decision.status == JobStatus.PERMAFAILED and not decision.retried


def test_backoff_has_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = {backoff_seconds(3, 10, rng) for _ in range(50)}
    assert len(delays) > 1 and all(20 <= d <= 40 for d in delays)
    assert backoff_seconds(40, 10, rng) <= MAX_BACKOFF_SECONDS


def test_delivery_schedule_then_permafailed() -> None:
    schedule = parse_schedule(DEFAULT_WEBHOOK_RETRY_SCHEDULE)
    assert schedule == (5, 30, 120, 600, 1800, 3600, 7200, 14400)
    rng = random.Random(3)
    for n, wait in enumerate(schedule, start=1):
        decision = decide_delivery_retry(n, schedule, rng=rng)
        assert decision.status == JobStatus.SEND_FAILED
        assert decision.delay_seconds is not None
        assert 0.9 * wait <= decision.delay_seconds <= 1.1 * wait
    assert decide_delivery_retry(len(schedule) + 1, schedule).status == JobStatus.PERMAFAILED


def test_delivery_honours_a_longer_retry_after() -> None:
    decision = decide_delivery_retry(1, (5.0,), retry_after=60)
    assert decision.delay_seconds == 60


@pytest.mark.parametrize("bad", ["5,x", "-1,5"])
def test_bad_schedule_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(bad)


def test_the_trigger_limit_covers_every_planned_trigger_and_a_margin() -> None:
    schedule = parse_schedule(DEFAULT_WEBHOOK_RETRY_SCHEDULE)
    # 3 transcription attempts, the failure message of a lost last one, 8 retried
    # deliveries: 12 planned, 14 allowed.
    assert trigger_limit(3, schedule) == 3 + 1 + 8 + TRIGGER_MARGIN == 14
    assert trigger_limit(1, ()) == 2 + TRIGGER_MARGIN
