"""The first seconds on a GPU machine: what is there, and does one model call work?

    python -m bench.gpu.check --model-dir DIR --workload FILE [--device cuda]

Prints one line per fact, as ``name: value``: Python, numpy, CTranslate2 and the CUDA
devices it sees with their compute types, which cuBLAS the process loaded, whether the
model server and the benchmark import (with the stand-ins, where PyAV and the database
drivers are missing), then the model loaded on the device and the workload's warm-up clip
transcribed three times (the first call compiles CTranslate2's kernels for a GPU newer
than its machine code: that is the warm-up the benchmark does before timing). Exits 1 on
the first failure, after saying what failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path


def fact(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)


def loaded_libraries(fragment: str) -> list[str]:
    """Shared libraries of this process whose path contains ``fragment``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps.splitlines() if fragment in line})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compute-type", default="default")
    args = parser.parse_args(argv)
    step = "start"
    try:
        fact("python", sys.version.split()[0])
        step = "numpy"
        import numpy

        fact("numpy", numpy.__version__)
        step = "ctranslate2"
        import ctranslate2

        fact("ctranslate2", f"{ctranslate2.__version__} from {Path(ctranslate2.__file__).parent}")
        devices = ctranslate2.get_cuda_device_count()
        fact("ctranslate2 CUDA devices", devices)
        if devices:
            fact("compute types on cuda", sorted(ctranslate2.get_supported_compute_types("cuda")))
        for module in ("av", "asyncpg", "sqlalchemy", "onnxruntime", "torch"):
            spec = importlib.util.find_spec(module)
            where = "missing" if spec is None else (spec.origin or "namespace")
            if spec is not None and "stubs" in where:
                where = "stand-in (bench/gpu/stubs)"
            fact(f"module {module}", where)
        step = "imports of the model server and the benchmark"
        importlib.import_module("model_server.app")
        from bench.scenarios import gpu

        fact("imports", "model_server.app, bench.scenarios.gpu: ok")
        step = "workload"
        workload = gpu.Workload.load(args.workload)
        fact(
            "workload", f"{workload.kind}: {workload.seconds:.1f} s, {len(workload.chunks)} chunks"
        )
        step = f"model load on {args.device}"
        from faster_whisper import WhisperModel

        compute_type = args.compute_type
        if compute_type == "default":
            compute_type = "float16" if args.device == "cuda" else "int8"
        started = time.perf_counter()
        model = WhisperModel(args.model_dir, device=args.device, compute_type=compute_type)
        fact("model load s", f"{time.perf_counter() - started:.2f} ({compute_type})")
        for attempt in range(3):
            step = f"transcribe call {attempt + 1}"
            started = time.perf_counter()
            segments, _ = model.transcribe(workload.warmup, beam_size=5, language="en")
            text = " ".join(s.text.strip() for s in segments)
            fact(f"call {attempt + 1} s", f"{time.perf_counter() - started:.2f}")
        fact("warm-up text", text)
        fact("cuBLAS loaded", loaded_libraries("libcublas") or "none")
    except Exception:
        fact("FAILED at", step)
        traceback.print_exc()
        return 1
    fact("check", "ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
