"""The GPU benchmark's reading of ``nvidia-smi``, which only a GPU machine has: here a
stand-in ``nvidia-smi`` on the PATH answers each query as the real one does (CSV, no
header, no units), so the code that runs there, where GPU time is short, has run once before."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.scenarios import gpu

FAKE = """#!/bin/sh
case "$*" in
  *--query-gpu=name,memory.total,driver_version,compute_cap*)
    echo "NVIDIA H100 80GB HBM3, 81559, 580.65.06, 9.0" ;;
  *--query-gpu=memory.used*) echo "{used}" ;;
  *--query-compute-apps=pid,used_memory*) printf '%s, 1234\\n4242, 99\\n' "{pid}" ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "nvidia-smi"
    script.write_text(FAKE.replace("{used}", "2048").replace("{pid}", str(os.getpid())))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return script


def test_the_gpu_is_named_and_each_process_memory_peak_is_sampled(fake_nvidia_smi: Path) -> None:
    device = gpu.describe_device("cuda")
    assert device["name"] == "NVIDIA H100 80GB HBM3"
    assert device["gpu"]["memory_total_mib"] == 81559.0
    assert device["gpu"]["compute_capability"] == "9.0"
    assert gpu.slug(device["name"]) == "nvidia-h100-80gb-hbm3"  # the results file's name

    memory = gpu.GpuMemory("cuda")
    assert memory.how == "nvidia-smi"
    assert memory.note == "GPU memory from nvidia-smi"
    assert memory.sample() == (2048.0, {os.getpid(): 1234.0, 4242: 99.0})
    with memory.watch({"server": os.getpid(), "gone": 1}) as peaks:
        time.sleep(0.1)
    assert peaks == {"how": "nvidia-smi", "device_used_mib": 2048.0, "server_mib": 1234.0}


def test_on_the_cpu_no_gpu_memory_is_claimed(fake_nvidia_smi: Path) -> None:
    memory = gpu.GpuMemory("cpu")  # even with nvidia-smi present
    assert memory.how == "none"
    assert memory.note == "no GPU memory: device cpu"
    with memory.watch({"server": os.getpid()}) as peaks:
        pass
    assert peaks == {"how": "none"}


def test_concurrency_is_kept_to_four_batches_worth() -> None:
    assert gpu.useful([1, 8, 16, 32, 64], 1) == [1]
    assert gpu.useful([1, 8, 16, 32, 64], 8) == [1, 8, 16, 32]
    assert gpu.useful([1, 8, 16, 32, 64], 32) == [1, 8, 16, 32, 64]
    assert gpu.useful([8, 16], 1) == [8]
