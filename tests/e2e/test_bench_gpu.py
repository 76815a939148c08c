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
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import pack
from bench.scenarios import gpu
from testkit.text import words

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "run-on-gpu-machine.sh"

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
    assert [(r["batch_size"], r["model_workers"], r["concurrency"]) for r in runs] == [
        (1, 1, 1),
        (1, 1, 2),
        (2, 1, 1),
        (2, 1, 2),
    ]
    for run in runs:
        served = run["model_server"]
        assert served["chunks"] == result["workload"]["chunks"]  # every chunk, once, over HTTP
        assert served["mean_batch_size"] <= run["batch_size"]
        assert run["refused_503"] == 0
        assert run["wer"]["wer_percent"] < 25, run["text"]
        assert run["gpu_memory_peak"] == {"how": "none"}
        assert run["server_rss_peak_mb"] > 0
    alone = result["server"]["one_job"]  # one job's chunks, two at a time, to each server
    assert [(r["batch_size"], r["concurrency"], r["copies"]) for r in alone] == [
        (1, 2, 1),
        (2, 2, 1),
    ]
    assert "## One job alone" in summary
    with_words = result["server"]["words"]
    assert with_words["word_timestamps"] and with_words["batch_size"] == 2
    assert "Word timestamps" in summary and "MAX_BATCH_SIZE=" in summary
    assert result["advice"]["max_batch_size"] in (1, 2)
    assert result["complete"]
    # The same report for a GPU names it (what nvidia-smi says; see test_bench_gpu_memory).
    result["device"].update(
        name="NVIDIA H100",
        gpu={"name": "NVIDIA H100", "memory_total_mib": 81559.0, "driver": "580", "count": 1},
    )
    assert "on NVIDIA H100\n\nDevice: NVIDIA H100 (81559.0 MiB, driver 580" in gpu.render(result)


def test_the_bundle_for_a_gpu_machine_unpacks_passes_its_check_and_profiles_without_pyav(
    tmp_path: Path,
) -> None:
    """The one-shot run for a GPU machine without network, on the CPU: the bundle (the
    smoke workload as PCM, tiny.en quantised to int8; the Python packages are this
    environment's, not downloaded), unpacked by the script, which loads the model from it
    and transcribes the warm-up clip with PyAV, asyncpg and SQLAlchemy replaced by their
    stand-ins, as on a machine that lacks them; then, with ``PROFILE=1``, the profile of
    the batched decoding (``bench.gpu.profile``) at its smallest."""
    bundle, results = tmp_path / "bundle", tmp_path / "results"
    assert pack.main(["--out", str(bundle), "--no-site", "--smoke", "--xz-preset", "0"]) == 0
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    model = manifest["files"]["model.tar.xz"]
    assert model["model_bin_bytes_int8"] < 0.55 * model["model_bin_bytes_before"]
    assert manifest["total_mib"] < manifest["limit_mib"]

    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "PROFILE": "1",
        "BENCH_ARGS": "--sizes 1,0 --variant-sizes 1",
        "STANDINS": "av asyncpg sqlalchemy",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(bundle), str(results)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for module in ("av", "asyncpg", "sqlalchemy"):
        assert f"module {module}: stand-in" in out
    assert "imports: model_server.app, bench.scenarios.gpu: ok" in out
    assert "workload: two short clips (smoke)" in out
    [text] = [line for line in out.splitlines() if line.startswith("warm-up text:")]
    assert "folder" in words(text)  # hotwords.mp3, heard by the int8 model from the bundle
    assert "check: ok" in out
    [log] = results.glob("run-on-gpu-machine-*.log")
    assert "check: ok" in log.read_text()

    [path] = results.glob("gpu-profile-cpu-*.json")
    profile = json.loads(path.read_text())
    assert [run["chunks"] for run in profile["runs"]] == [1, 2]  # one chunk, then both
    for run in profile["runs"]:
        assert run["phases_s"]["generate"] > 0 and run["generate_calls"]
    assert {v["variant"] for v in profile["variants"]} >= {
        "timestamps, beam 5 (the server)",
        "no timestamps, beam 5",
    }
    assert "generate_with_fallback" in profile["profile_8_tottime"]
