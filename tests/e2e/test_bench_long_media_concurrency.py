"""The long-media concurrency benchmark's smallest run works: two tiny fixtures as two jobs
at once, through a real model server process (one transcriber-like client per job) and
through plain faster-whisper, sequential and batched, one after the other and all at once.

No time or rate is asserted (numbers come from ``python -m bench long-media-concurrency``):
only that every way transcribed every job, and that the service's chunks went through the
model server over HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scenarios import long_media_concurrency

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_the_smallest_concurrency_run_transcribes_every_job_every_way(tmp_path: Path) -> None:
    long_media_concurrency.main([*long_media_concurrency.SMOKE, "--out", str(tmp_path)])

    [path] = tmp_path.glob("long-media-concurrency-*.json")
    result = json.loads(path.read_text())
    assert "## Targets" in path.with_suffix(".md").read_text()
    assert [j["name"] for j in result["jobs"]] == ["jfk", "hotwords"]
    audio = sum(j["seconds"] for j in result["jobs"])
    ways = result["ways"]
    assert [w.split(",")[0] for w in ways] == [
        "sequential",
        "batched",
        "batched with timestamps",
        "service",
        "service",
        "sequential",
        "batched",
    ]
    assert list(ways)[4].startswith("service, 2 workers x ")
    assert all("2 at once, 2 workers" in w for w in list(ways)[5:])
    for way, entry in ways.items():
        assert entry["audio_seconds"] == pytest.approx(audio, abs=0.2), way
        assert entry["audio_seconds_per_second"] > 0
        assert list(entry["jobs"]) == ["0:jfk", "1:hotwords"]
        assert entry["jobs"]["0:jfk"]["wer_percent"] < 25, entry["texts"]  # real speech, heard
    for way in list(ways)[3:5]:
        served = ways[way]["model_server"]
        assert served["chunks"] == 2, way  # one chunk each, over HTTP, none refused
        assert served["rejected_chunks"] == 0, way
    summary = result["summary"]
    assert summary["service_x_sequential"] > 0 and summary["service_x_batched"] > 0
