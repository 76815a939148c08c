"""The pipeline-ceiling benchmark's smallest run works: the whole service on PostgreSQL with
the stand-in model, a ramp step and a short hold, every job delivered once, and the report
says what each service cost and which connections it held.

No rate or duration is asserted (numbers come from ``python -m bench ceiling``): only that
the run measured what it says it measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scenarios import ceiling

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SMALLEST = ["--rates", "4", "--step-seconds", "4", "--ramp", "--rate", "4", "--minutes", "0.1"]


def test_the_smallest_ceiling_run_measures_every_service(pg_template: str, tmp_path: Path) -> None:
    ceiling.main([*SMALLEST, "--idle-seconds", "1", "--drain-minutes", "3", "--out", str(tmp_path)])

    [path] = tmp_path.glob("ceiling-*.json")
    result = json.loads(path.read_text())
    assert path.with_suffix(".md").is_file()
    checks = result["checks"]
    assert checks["accepted"] == checks["jobs"] == 6 + 16 + 24  # warm-up, step, hold
    assert checks["all_succeeded"], checks["statuses"]
    assert checks["jobs_delivered"] == checks["jobs"]
    assert checks["jobs_delivered_more_than_once"] == checks["duplicate_webhook_ids"] == 0
    assert checks["bad_signatures"] == 0
    assert checks["webhook_id_is_the_jobs"] == checks["jobs"]
    assert result["stand_in_chunks"] == checks["jobs"]  # one chunk each, none retried
    [step] = result["steps"]
    for phase in (step, result["hold"]):
        assert phase["drained"]
        for service in ceiling.SERVICES:
            assert phase["cpu_ms_per_job"][service] > 0, (phase["name"], service)
        apps = set(phase["connections"])
        assert {"all", "transcription-enqueue", "transcription-transcriber"} <= apps
        assert phase["latency_created_to_webhook"]["count"] == phase["accepted"]
