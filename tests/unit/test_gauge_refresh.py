"""The orchestrator's queue gauges count rows: on a deep backlog they are refreshed less
often, so counting never takes more than a twentieth of the time."""

from __future__ import annotations

import pytest

from orchestrator_service.service import GAUGE_REFRESH_SECONDS, gauge_interval


@pytest.mark.parametrize("took", [0.0, 0.004, 0.05])
def test_cheap_gauges_are_refreshed_every_second(took: float) -> None:
    assert gauge_interval(took) == GAUGE_REFRESH_SECONDS == 1.0


@pytest.mark.parametrize(("took", "every"), [(0.1, 2.0), (0.5, 10.0), (2.0, 40.0)])
def test_slow_gauges_take_at_most_a_twentieth_of_the_time(took: float, every: float) -> None:
    assert gauge_interval(took) == pytest.approx(every)


def test_gauges_are_never_older_than_a_minute() -> None:
    assert gauge_interval(30.0) == 60.0
