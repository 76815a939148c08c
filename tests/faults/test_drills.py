"""The fault drills with CI durations: each one runs the real services as processes on a
fresh PostgreSQL database, breaks something while jobs run, and checks from the database
and the webhook receiver's log that no job and no transcript was lost (see
``faults/checks.py`` for the full list). ``python -m faults`` runs them longer.
"""

from __future__ import annotations

import asyncio

import pytest

from faults.drills import DRILL_ORDER, RunContext, run_drill

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.postgres]


@pytest.mark.parametrize("name", DRILL_ORDER)
def test_drill(fault_run: RunContext, name: str) -> None:
    result = asyncio.run(run_drill(fault_run, name))
    print(result.summary())
    assert result.passed, (
        result.summary()
        + (f"\n{result.error}" if result.error else "")
        + (f"\nlogs: {result.workdir}")
    )
