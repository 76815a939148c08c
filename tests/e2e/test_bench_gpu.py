"""``make bench-gpu``'s code path on the CPU: the GPU benchmark's smallest run works.

The same scenario a GPU machine runs (``python -m bench gpu``), with ``--device cpu`` and
the bundled tiny.en: a real model server process over loopback HTTP at two batch sizes
and two concurrencies, against ``WhisperModel.transcribe`` and
``BatchedInferencePipeline`` in the test's process, with and without word timestamps.
No time or rate is asserted (numbers come from the benchmark itself): only that the run
measured what it says, and that its report says there is no GPU memory on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scenarios import gpu

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_the_smallest_gpu_benchmark_runs_on_the_cpu(tmp_path: Path) -> None:
    gpu.main([*gpu.SMOKE, "--out", str(tmp_path)])

    [path] = tmp_path.glob("gpu-cpu-*.json")  # the name says the device
    result = json.loads(path.read_text())
    summary = path.with_suffix(".md").read_text()
    assert result["device"]["gpu"] is None
    assert result["memory_note"] == "no GPU memory: device cpu"
    assert "no GPU memory: device cpu" in summary

    plain = result["plain"]
    assert set(plain["pipeline"]) == {"1", "2"}
    for entry in [plain["sequential"], *plain["pipeline"].values(), plain["pipeline_words"]]:
        assert entry["media_seconds_per_second"] > 0
        assert entry["wer"]["wer_percent"] < 25, entry["text"]  # real speech, heard

    runs = result["server"]["runs"]
    assert [(r["batch_size"], r["concurrency"]) for r in runs] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for run in runs:
        served = run["model_server"]
        assert served["chunks"] == result["workload"]["chunks"]  # every chunk, once, over HTTP
        assert served["mean_batch_size"] <= run["batch_size"]
        assert run["refused_503"] == 0
        assert run["wer"]["wer_percent"] < 25, run["text"]
        assert run["gpu_memory_peak"] == {"how": "none"}
        assert run["server_rss_peak_mb"] > 0
    words = result["server"]["words"]
    assert words["word_timestamps"] and words["batch_size"] == 2
    assert "Word timestamps" in summary and "MAX_BATCH_SIZE=" in summary
    assert result["advice"]["max_batch_size"] in (1, 2)
