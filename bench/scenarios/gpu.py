"""The model server against plain faster-whisper on one device (a GPU, or the CPU).

    make bench-gpu MODEL_DIR=/models/faster-whisper-large-v3       # CUDA, the full run
    .venv/bin/python -m bench gpu --device cpu --smoke              # the smallest run (CI)

**What runs, one device, one model directory, the same audio, in one run:**

* *server*: the model server as its own process (``uvicorn --factory
  model_server.app:create_app``, what ``transcription serve model-server`` runs), real HTTP
  on 127.0.0.1, once per server of the grid: each ``--batch-sizes`` value
  (``MAX_BATCH_SIZE``) with each ``--model-workers`` value (``MODEL_WORKERS``: batches
  decoded at once), or the pairs ``--servers`` lists (``MAX_QUEUED_CHUNKS`` large enough
  that no request is refused). For each ``--concurrency`` value up to four times what the
  server decodes at once (batch size x workers; more clients only queue longer), that many
  clients post the
  workload's chunks (16 kHz PCM, as the transcriber sends them, ``language=en``, beam 5)
  to ``/v1/predict``, each client its next chunk as soon as its last one is answered
  (closed loop), so the server batches concurrent requests as it does in production. A
  run sends the chunk list as many times as it takes to give every client ``--rounds``
  chunks (``--copies`` fixes it); the first copy's text gives the WER. From the server's
  ``/metrics``: batches, mean batch size, compute seconds. Then *one job alone*: the
  chunks sent once, ``--one-job-clients`` at a time (the transcriber's
  ``CHUNK_CONCURRENCY``, 16), timed against sequential ``transcribe()``.
* *sequential*: ``WhisperModel(dir, device, compute_type).transcribe(recording,
  beam_size=5, language="en")`` in this process, its defaults otherwise (no VAD).
* *pipeline*: ``BatchedInferencePipeline(that model).transcribe(recording, beam_size=5,
  language="en", batch_size=b, clip_timestamps=<the server's chunks>)`` for each batch
  size: faster-whisper's batching on exactly the chunks the server gets (its defaults
  otherwise: no timestamps, so it does less than the server).
* *word timestamps*: the server at the largest batch size and concurrency, and the
  pipeline at the largest batch size, again with ``word_timestamps`` on: the cost.

Each way is warmed up before it is timed (on a GPU whose kernels CTranslate2 compiles on
first use, the first call takes far longer). Throughput is **media seconds per wall
second** (the recording's length, times the copies sent, over the wall time).

**Memory**: on CUDA, each process's GPU memory (``nvidia-smi --query-compute-apps``,
sampled every 0.25 s during each run: the peak), or where ``nvidia-smi`` is missing, the
device's used memory from ``torch.cuda.mem_get_info`` if torch is installed; on the CPU
there is no GPU memory (the report says so) and the server's peak RSS is given.

**The workload**: the long recording of ``bench.speech`` (``--cycles`` times the speech
fixtures, with pauses), cut by the transcriber's chunker (``plan_chunks``, Silero VAD);
with ``--smoke``, two of its short pieces (the stereo file's two channels, 5 s each) one
chunk each, and hotwords.mp3 to warm up. Making it needs PyAV and onnxruntime;
``--write-workload FILE`` saves it (decoded samples, chunk boundaries, reference) and
``--workload FILE`` reads it back, for a machine without them. WER: ``testkit.text.wer``
on the whole text.

Results: ``<out>/<name>-<date>.json`` and ``.md``; the name says the GPU
(``gpu-<its name>``, ``gpu-cpu`` on the CPU) unless ``--name`` is given. The report ends
with what to set from the run: ``MAX_BATCH_SIZE``, the model server's
``containerConcurrency``, and replicas per job rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import measure, metrics, report
from bench.speech import GAPS_S, SAMPLE_RATE, TAIL_S
from testkit.machine import loadavg
from testkit.procs import Service
from testkit.text import wer, words

#: The options of the smallest run (``python -m bench --smoke``; the CI test runs it).
SMOKE = ["--device", "cpu", "--smoke"]
PCM_CONTENT_TYPE = "audio/x-pcm-s16le"
#: A replica is planned at this share of what it can do (Knative's target utilisation).
UTILISATION = 0.8
#: A run's batches count as full when their mean size is at least this share of the limit.
FULL_BATCH = 0.75
#: The mean media length of the capacity simulation's day (bench/capacity_sim.py), s.
MEAN_JOB_MEDIA_S = 396.0


# --- the workload ------------------------------------------------------------------------


@dataclass
class Workload:
    """The recording (16 kHz mono float32), its chunks (sample spans), its reference."""

    samples: np.ndarray
    chunks: list[tuple[int, int]]
    reference: str
    warmup: np.ndarray
    kind: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def chunk_audio(self) -> list[np.ndarray]:
        return [self.samples[a:b] for a, b in self.chunks]

    def save(self, path: Path) -> Path:
        """As 16-bit PCM (what the model server is sent; the samples came from 16-bit
        audio, so nothing is lost), uncompressed: xz, with its large window, packs the
        recording's repeated cycles far better than zip."""
        meta = json.dumps({"reference": self.reference, "kind": self.kind}).encode()
        with path.open("wb") as out:
            np.savez(
                out,
                samples=pcm16(self.samples),
                chunks=np.asarray(self.chunks, dtype=np.int64).reshape(-1, 2),
                warmup=pcm16(self.warmup),
                meta=np.frombuffer(meta, dtype=np.uint8),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> Workload:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            return cls(
                samples=data["samples"].astype(np.float32) / 32768,
                chunks=[(int(a), int(b)) for a, b in data["chunks"]],
                reference=meta["reference"],
                warmup=data["warmup"].astype(np.float32) / 32768,
                kind=meta["kind"],
            )


def make_workload(cycles: int, smoke: bool) -> Workload:
    """Decode the fixtures (PyAV) and plan the chunks (VAD); see the module docstring."""
    from bench.speech import compose, pieces

    clips = {p.name: p for p in pieces()}
    if not smoke:
        warmup = clips["jfk.flac"].audio.astype(np.float32)
        samples, reference, _ = compose(cycles)
        from transcription_core.audio.chunking import plan_chunks

        spans = [(c.start_sample, c.end_sample) for c in plan_chunks(samples)]
        return Workload(samples, spans, reference, warmup, f"recording, {cycles} cycles")
    parts: list[np.ndarray] = []
    spans = []
    position = 0
    warmup = clips["hotwords.mp3"].audio.astype(np.float32)
    short = [clips[f"stereo_diarization.wav:{side}"] for side in ("left", "right")]
    for index, piece in enumerate(short):
        if parts:
            gap = np.zeros(int(GAPS_S[(index - 1) % len(GAPS_S)] * SAMPLE_RATE), np.float32)
            parts.append(gap)
            position += len(gap)
        parts.append(piece.audio.astype(np.float32))
        spans.append((position, position + len(piece.audio)))
        position += len(piece.audio)
    parts.append(np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32))
    reference = " ".join(p.reference for p in short)
    return Workload(np.concatenate(parts), spans, reference, warmup, "two short clips (smoke)")


def pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2")


def to_pcm(samples: np.ndarray) -> bytes:
    return pcm16(samples).tobytes()


# --- the device and its memory ------------------------------------------------------------


def nvidia_smi(*query: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-...`` (csv, no header, no units); None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[field.strip() for field in line.split(",")] for line in out.splitlines() if line]


def describe_device(device: str) -> dict[str, Any]:
    import ctranslate2

    info: dict[str, Any] = {
        "device": device,
        "ctranslate2": ctranslate2.__version__,
        "ctranslate2_cuda_devices": ctranslate2.get_cuda_device_count(),
    }
    if device != "cuda":
        info["gpu"] = None
        info["name"] = "cpu"
        return info
    rows = nvidia_smi("--query-gpu=name,memory.total,driver_version,compute_cap")
    if rows:
        name, total, driver, capability = rows[0][:4]
        info["gpu"] = {
            "name": name,
            "memory_total_mib": float(total),
            "driver": driver,
            "compute_capability": capability,
            "count": len(rows),
        }
        info["name"] = name
    else:
        info["gpu"] = {"name": "unknown (no nvidia-smi)"}
        info["name"] = "cuda"
        with contextlib.suppress(Exception):
            import torch

            info["gpu"] = {
                "name": torch.cuda.get_device_name(0),
                "memory_total_mib": torch.cuda.get_device_properties(0).total_memory / 2**20,
            }
            info["name"] = info["gpu"]["name"]
    return info


class GpuMemory:
    """The peak GPU memory of some processes (and of the device) over a run."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.how = "none"
        self._torch: Any = None
        if device == "cuda":
            if nvidia_smi("--query-gpu=memory.used") is not None:
                self.how = "nvidia-smi"
            else:
                with contextlib.suppress(Exception):
                    import torch

                    torch.cuda.mem_get_info()
                    self._torch = torch
                    self.how = "torch.cuda.mem_get_info (device-wide)"

    @property
    def note(self) -> str:
        if self.device != "cuda":
            return f"no GPU memory: device {self.device}"
        if self.how == "none":
            return "GPU memory not measured: neither nvidia-smi nor torch is installed"
        return f"GPU memory from {self.how}"

    def sample(self) -> tuple[float | None, dict[int, float]]:
        """(device used MiB, {pid: MiB})."""
        if self.how == "nvidia-smi":
            used = nvidia_smi("--query-gpu=memory.used") or []
            apps = nvidia_smi("--query-compute-apps=pid,used_memory") or []
            per_pid = {}
            for row in apps:
                with contextlib.suppress(ValueError, IndexError):
                    per_pid[int(row[0])] = float(row[1])
            total = sum(float(r[0]) for r in used if r and r[0].replace(".", "").isdigit())
            return total, per_pid
        if self._torch is not None:
            free, total = self._torch.cuda.mem_get_info()
            return (total - free) / 2**20, {}
        return None, {}

    @contextlib.contextmanager
    def watch(self, pids: dict[str, int]) -> Iterator[dict[str, Any]]:
        """Sample every 0.25 s while the block runs; the peaks land in the dict yielded."""
        peaks: dict[str, Any] = {"how": self.how}
        if self.how == "none":
            yield peaks
            return
        stop = threading.Event()

        def loop() -> None:
            while True:
                device, per_pid = self.sample()
                if device is not None:
                    peaks["device_used_mib"] = max(peaks.get("device_used_mib", 0.0), device)
                for name, pid in pids.items():
                    if pid in per_pid:
                        key = f"{name}_mib"
                        peaks[key] = max(peaks.get(key, 0.0), per_pid[pid])
                if stop.wait(0.25):
                    return

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield peaks
        finally:
            stop.set()
            thread.join(timeout=15)


# --- the model server ----------------------------------------------------------------------


def server_argv(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "model_server.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@contextlib.contextmanager
def model_server(env: dict[str, str], log: Path, timeout: float) -> Iterator[Service]:
    from testkit.ports import free_port

    server = Service("model-server", "model-server", free_port(), env, log, argv=server_argv)
    try:
        server.start()
        server.wait_ready_blocking(timeout, path="/readyz")
        yield server
    finally:
        server.stop(grace=15)


async def drive(
    url: str,
    chunks: list[bytes],
    copies: int,
    concurrency: int,
    *,
    word_timestamps: bool = False,
) -> dict[str, Any]:
    """``copies`` x ``chunks`` posted by ``concurrency`` clients; the first copy's texts."""
    todo = [(copy, index) for copy in range(copies) for index in range(len(chunks))]
    todo.reverse()
    texts: dict[int, str] = {}
    refused = 0
    params = {"language": "en", "beam_size": "5"}
    if word_timestamps:
        params["word_timestamps"] = "true"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def client_loop() -> None:
            nonlocal refused
            while todo:
                copy, index = todo.pop()
                while True:
                    answer = await client.post(
                        url + "/v1/predict",
                        params=params,
                        content=chunks[index],
                        headers={"content-type": PCM_CONTENT_TYPE},
                    )
                    if answer.status_code != 503:
                        break
                    refused += 1  # queue full: wait as the transcriber does
                    await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
                if answer.status_code != 200:
                    raise RuntimeError(f"/v1/predict answered {answer.status_code}: {answer.text}")
                if copy == 0:
                    texts[index] = " ".join(s["text"].strip() for s in answer.json()["segments"])

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(client_loop())
        wall = time.perf_counter() - started
    return {
        "wall_seconds": wall,
        "text": " ".join(texts[i] for i in range(len(chunks))),
        "refused_503": refused,
    }


# --- main --------------------------------------------------------------------------------


def useful(concurrencies: list[int], batch_size: int) -> list[int]:
    """The concurrencies worth running at a batch size: up to four batches' worth of
    clients (more only queue longer at the same throughput), and at least the lowest."""
    kept = [c for c in concurrencies if c <= 4 * batch_size]
    return kept or [min(concurrencies)]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench gpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--model-dir",
        help="a faster-whisper model directory (default: the bundled tiny.en)",
    )
    parser.add_argument(
        "--compute-type", default="default", help="default: float16 on CUDA, int8 on the CPU"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: nproc)")
    parser.add_argument("--batch-sizes", default="1,8,16,32", help="MAX_BATCH_SIZE values")
    parser.add_argument(
        "--model-workers", default="1", help="MODEL_WORKERS values (each with every batch size)"
    )
    parser.add_argument(
        "--servers",
        help="the model servers to run, in order, as MAX_BATCH_SIZExMODEL_WORKERS "
        "(e.g. 8x1,1x4,2x4); default: every --batch-sizes value with every --model-workers one",
    )
    parser.add_argument(
        "--one-job-clients",
        type=int,
        default=16,
        help="one job alone: its chunks sent this many at a time, once, to each server "
        "(the transcriber's CHUNK_CONCURRENCY; 0: skip)",
    )
    parser.add_argument("--concurrency", default="1,8,16,32,64", help="clients sending at once")
    parser.add_argument("--cycles", type=int, default=10, help="cycles of the recording")
    parser.add_argument("--rounds", type=int, default=4, help="chunks per client, at least")
    parser.add_argument("--copies", type=int, default=0, help="copies of the chunks sent a run")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (short clips)")
    parser.add_argument("--workload", type=Path, help="read the workload from this file")
    parser.add_argument("--write-workload", type=Path, help="write the workload here and stop")
    parser.add_argument("--no-words", action="store_true", help="skip the word timestamps runs")
    parser.add_argument("--load-timeout", type=float, default=600.0, help="model load, s")
    parser.add_argument("--name", help="results file stem (default gpu-<the GPU's name>)")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        if args.batch_sizes == parser.get_default("batch_sizes"):
            args.batch_sizes = "1,2"
        if args.concurrency == parser.get_default("concurrency"):
            args.concurrency = "1,2"
        args.copies = args.copies or 1
        if args.one_job_clients == parser.get_default("one_job_clients"):
            args.one_job_clients = 2
    args.server_grid = servers(args)
    return args


def servers(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(MAX_BATCH_SIZE, MODEL_WORKERS) of each model server to run, in order."""
    if args.servers:
        grid = []
        for item in args.servers.split(","):
            size, _, workers = item.strip().lower().partition("x")
            grid.append((int(size), int(workers or 1)))
        return grid
    return [(size, w) for w in ints(args.model_workers) for size in ints(args.batch_sizes)]


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.write_workload:
        workload = make_workload(args.cycles, args.smoke)
        workload.save(args.write_workload)
        report.log(f"workload ({workload.kind}, {workload.seconds:.0f} s) -> {args.write_workload}")
        return
    workload = (
        Workload.load(args.workload) if args.workload else make_workload(args.cycles, args.smoke)
    )
    info = report.machine(postgres=False)
    device = describe_device(args.device)
    if args.device == "cuda" and not device["ctranslate2_cuda_devices"]:
        raise SystemExit("--device cuda: CTranslate2 sees no CUDA device (see bench/README.md)")
    model_dir = args.model_dir or default_model_dir()
    model_name = Path(model_dir).name if args.model_dir else "tiny.en"
    compute_type = args.compute_type
    if compute_type == "default":
        compute_type = "float16" if args.device == "cuda" else "int8"
    threads = args.threads or len(os.sched_getaffinity(0))
    concurrencies = ints(args.concurrency)
    rounds = args.rounds

    def copies(concurrency: int) -> int:
        return args.copies or max(1, math.ceil(rounds * concurrency / len(workload.chunks)))

    report.log(
        f"{device['name']}: model {model_dir} ({compute_type}); workload {workload.kind}: "
        f"{workload.seconds:.1f} s, {len(workload.chunks)} chunks"
    )
    result: dict[str, Any] = {
        "machine": info,
        "device": device,
        # Names, not paths: no path of the machine in the results.
        "args": {
            k: Path(v).name if k in ("model_dir", "workload", "out") and v else v
            for k, v in vars(args).items()
        },
        "model": {
            "name": model_name,
            "source": "--model-dir" if args.model_dir else "the bundled tiny.en",
            "compute_type": compute_type,
        },
        "workload": {
            "kind": workload.kind,
            "seconds": round(workload.seconds, 2),
            "chunks": len(workload.chunks),
            "chunk_seconds": round(sum(b - a for a, b in workload.chunks) / SAMPLE_RATE, 2),
            "reference_words": len(words(workload.reference)),
            "copies_by_concurrency": {c: copies(c) for c in concurrencies},
        },
    }
    memory = GpuMemory(args.device)
    result["memory_note"] = memory.note
    name = args.name or f"gpu-{slug(device['name'])}"

    def save(complete: bool) -> None:
        """Written after each step, so a run cut short by a time limit leaves its numbers."""
        result["complete"] = complete
        result["loadavg_at_end"] = loadavg()
        result["advice"] = advice(result) if result["server"]["runs"] else None
        report.write(args.out, name, result, render(result))

    result["server"] = {"runs": [], "words": None, "one_job": []}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        result["plain"] = run_plain(args, workload, model_dir, compute_type, threads, memory)
        save(False)
        run_server(
            args,
            workload,
            model_dir,
            compute_type,
            threads,
            memory,
            copies,
            Path(tmp),
            result["server"],
            lambda: save(False),
        )
    save(True)


def default_model_dir() -> str:
    from bench.speech import tiny_model_path

    return tiny_model_path()


def run_plain(
    args: argparse.Namespace,
    workload: Workload,
    model_dir: str,
    compute_type: str,
    threads: int,
    memory: GpuMemory,
) -> dict[str, Any]:
    """WhisperModel.transcribe and BatchedInferencePipeline in this process."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    own = {"bench": os.getpid()}
    with memory.watch(own) as load_peak:
        model = WhisperModel(
            model_dir, device=args.device, compute_type=compute_type, cpu_threads=threads
        )
    pipeline = BatchedInferencePipeline(model)
    clips = [{"start": a / SAMPLE_RATE, "end": b / SAMPLE_RATE} for a, b in workload.chunks]

    def sequential(**extra: Any) -> str:
        segments, _ = model.transcribe(workload.samples, beam_size=5, language="en", **extra)
        return " ".join(s.text.strip() for s in segments)

    def batched(size: int, **extra: Any) -> str:
        segments, _ = pipeline.transcribe(
            workload.samples,
            beam_size=5,
            language="en",
            batch_size=size,
            clip_timestamps=clips,
            **extra,
        )
        return " ".join(s.text.strip() for s in segments)

    def timed(label: str, run: Any) -> dict[str, Any]:
        with memory.watch(own) as peaks:
            started = time.perf_counter()
            text = run()
            wall = time.perf_counter() - started
        entry = {
            "wall_seconds": round(wall, 3),
            "media_seconds_per_second": round(workload.seconds / wall, 2),
            "wer": wer(workload.reference, text),
            "gpu_memory_peak": peaks,
            "loadavg": loadavg(),
            "text": text,
        }
        report.log(f"{label}: {wall:.2f} s, {entry['media_seconds_per_second']} media s/s")
        return entry

    warm = workload.warmup
    list(model.transcribe(warm, beam_size=5, language="en")[0])  # compiles kernels on a GPU
    out: dict[str, Any] = {"model_load_gpu_memory_peak": load_peak}
    out["sequential"] = timed("sequential", sequential)
    out["pipeline"] = {}
    for size in ints(args.batch_sizes):
        # Warm up with a full batch: the warm-up clip ``size`` times.
        span = len(warm) / SAMPLE_RATE
        clips_warm = [{"start": i * span, "end": (i + 1) * span} for i in range(size)]
        tiled = np.tile(warm, size)
        list(
            pipeline.transcribe(
                tiled, beam_size=5, language="en", batch_size=size, clip_timestamps=clips_warm
            )[0]
        )
        out["pipeline"][str(size)] = timed(f"pipeline batch {size}", lambda s=size: batched(s))
    if not args.no_words:
        size = max(ints(args.batch_sizes))
        out["pipeline_words"] = timed(
            f"pipeline batch {size}, word timestamps",
            lambda: batched(size, word_timestamps=True),
        )
        out["pipeline_words"]["batch_size"] = size
    return out


def run_server(
    args: argparse.Namespace,
    workload: Workload,
    model_dir: str,
    compute_type: str,
    threads: int,
    memory: GpuMemory,
    copies: Callable[[int], int],
    tmp: Path,
    out: dict[str, Any],
    save: Callable[[], None],
) -> None:
    """Fills ``out`` (``runs``, ``words``), calling ``save`` after each batch size."""
    chunks = [to_pcm(c) for c in workload.chunk_audio()]
    warm = to_pcm(workload.warmup)
    grid: list[tuple[int, int]] = args.server_grid
    concurrencies = ints(args.concurrency)
    runs: list[dict[str, Any]] = out["runs"]
    for position, (size, workers) in enumerate(grid):
        env = {
            "MODEL": model_dir,
            "MODEL_DEVICE": args.device,
            "MODEL_COMPUTE_TYPE": compute_type,
            "MODEL_CPU_THREADS": str(threads),
            "MAX_BATCH_SIZE": str(size),
            "MODEL_WORKERS": str(workers),
            "MAX_QUEUED_CHUNKS": str(max(64, 2 * max(concurrencies), 2 * args.one_job_clients)),
            "LOG_LEVEL": "WARNING",
        }
        label = f"MAX_BATCH_SIZE={size} MODEL_WORKERS={workers}"
        log = tmp / f"model-server-{size}x{workers}.log"
        loading = time.perf_counter()
        with model_server(env, log, args.load_timeout) as server:
            load_s = time.perf_counter() - loading
            pids = {"server": server.pid}
            with memory.watch(pids) as load_peak:
                # Warm up: every worker a batch of the largest size, so every kernel is
                # compiled.
                asyncio.run(drive(server.url, [warm], size * workers, size * workers))
            report.log(f"server {label}: ready in {load_s:.1f} s, warmed up")
            measure.reset_peak_rss(server.pid)
            shape = {
                "batch_size": size,
                "model_workers": workers,
                "ready_seconds": round(load_s, 1),
            }
            for concurrency in useful(concurrencies, size * workers):
                entry = server_run(
                    server, memory, chunks, copies(concurrency), concurrency, workload
                )
                entry.update(shape)
                entry["gpu_memory_after_load"] = load_peak
                runs.append(entry)
                report.log(
                    f"server {label}, concurrency {concurrency}: "
                    f"{entry['wall_seconds']:.2f} s, "
                    f"{entry['media_seconds_per_second']} media s/s, "
                    f"mean batch {entry['model_server']['mean_batch_size']}"
                )
            if args.one_job_clients:
                clients = min(args.one_job_clients, len(chunks))
                alone = server_run(server, memory, chunks, 1, clients, workload)
                alone.update(shape)
                out["one_job"].append(alone)
                report.log(f"server {label}, one job, {clients} clients: {alone['wall_seconds']} s")
            if position == len(grid) - 1 and not args.no_words:
                top = max(useful(concurrencies, size * workers))
                words_run = server_run(
                    server, memory, chunks, copies(top), top, workload, words=True
                )
                words_run.update(shape)
                out["words"] = words_run
                report.log(f"server {label}, word timestamps: {words_run['wall_seconds']} s")
        save()


def server_run(
    server: Service,
    memory: GpuMemory,
    chunks: list[bytes],
    copies: int,
    concurrency: int,
    workload: Workload,
    *,
    words: bool = False,
) -> dict[str, Any]:
    before = metrics.metrics(server.url)
    with memory.watch({"server": server.pid}) as peaks:
        done = asyncio.run(drive(server.url, chunks, copies, concurrency, word_timestamps=words))
    after = metrics.metrics(server.url)
    media = workload.seconds * copies
    return {
        "concurrency": concurrency,
        "copies": copies,
        "word_timestamps": words,
        "wall_seconds": round(done["wall_seconds"], 3),
        "media_seconds_per_second": round(media / done["wall_seconds"], 2),
        "wer": wer(workload.reference, done["text"]),
        "refused_503": done["refused_503"],
        "model_server": metrics.model_server_summary(metrics.metrics_delta(before, after)),
        "gpu_memory_peak": peaks,
        "server_rss_peak_mb": round(measure.rss_kib(server.pid, "VmHWM") / 1024, 1),
        "loadavg": loadavg(),
        "text": done["text"],
    }


# --- what to set, and the report ----------------------------------------------------------


def advice(result: dict[str, Any]) -> dict[str, Any]:
    """The server with the fewest requests in flight (``MAX_BATCH_SIZE`` x
    ``MODEL_WORKERS``, its ``containerConcurrency``) within 5 % of the best throughput
    *with full batches* (between equals, the faster); what a replica then serves at that
    concurrency, and what more clients would give it.

    A server is judged by its runs whose mean batch reached ``FULL_BATCH`` of its batch
    size: with fewer clients than that, every size forms the same batches, and which one
    comes out ahead is noise (on an H200 a limit of 16 led by 6 % with 8 clients, batches
    of 4.3 at both limits, and lost 15 % once its batches filled). Servers never filled
    count with all their runs only when none filled.
    """
    runs = result["server"]["runs"]
    full = [r for r in runs if _mean_batch(r) >= FULL_BATCH * r["batch_size"]]
    judged = full or runs
    best = max(r["media_seconds_per_second"] for r in judged)
    chosen = min(
        (r for r in judged if r["media_seconds_per_second"] >= 0.95 * best),
        key=lambda r: (_in_flight(r), -r["media_seconds_per_second"]),
    )
    size, workers = chosen["batch_size"], _workers(chosen)
    at_server = [r for r in runs if (r["batch_size"], _workers(r)) == (size, workers)]
    equal = [r for r in at_server if r["concurrency"] == size * workers]
    rate = (equal or [max(at_server, key=lambda r: r["media_seconds_per_second"])])[0][
        "media_seconds_per_second"
    ]
    best_at_server = max(at_server, key=lambda r: r["media_seconds_per_second"])
    return {
        "max_batch_size": size,
        "model_workers": workers,
        "container_concurrency": size * workers,
        "measured_at_concurrency": size * workers if equal else None,
        "media_seconds_per_second_per_replica": rate,
        "best_concurrency_at_that_batch_size": best_at_server["concurrency"],
        "best_media_seconds_per_second_at_that_batch_size": best_at_server[
            "media_seconds_per_second"
        ],
        "planned_at_utilisation": UTILISATION,
        "replicas_per_job_per_second_of_mean_media": round(
            MEAN_JOB_MEDIA_S / (rate * UTILISATION), 2
        ),
        "mean_media_seconds": MEAN_JOB_MEDIA_S,
    }


def _workers(run: dict[str, Any]) -> int:
    return int(run.get("model_workers", 1))  # runs recorded before MODEL_WORKERS had one


def _in_flight(run: dict[str, Any]) -> int:
    return int(run["batch_size"]) * _workers(run)


def _mean_batch(run: dict[str, Any]) -> float:
    if run["batch_size"] == 1:
        return 1.0
    return float((run.get("model_server") or {}).get("mean_batch_size") or 0.0)


def _mib(peaks: dict[str, Any], key: str) -> str:
    value = peaks.get(key)
    return f"{value:,.0f}" if isinstance(value, int | float) else "-"


def render(result: dict[str, Any]) -> str:
    device, model, work = result["device"], result["model"], result["workload"]
    plain, server, tip = result["plain"], result["server"], result["advice"]
    gpu = device["gpu"]
    where = (
        f"{gpu['name']} ({gpu.get('memory_total_mib', '?')} MiB, driver {gpu.get('driver', '?')}, "
        f"compute capability {gpu.get('compute_capability', '?')})"
        if gpu
        else "the CPU (no GPU)"
    )
    lines = [
        f"# The model server against plain faster-whisper on {device['name']}",
        "",
        f"Device: {where}; CTranslate2 {device['ctranslate2']}, sees "
        f"{device['ctranslate2_cuda_devices']} CUDA device(s). Model `{model['name']}` "
        f"({model['compute_type']}). Workload: {work['kind']}, {work['seconds']} s, "
        f"{work['chunks']} chunks ({work['chunk_seconds']} s of audio in them), "
        f"{work['reference_words']} reference words. {result['memory_note']}."
        + ("" if result.get("complete") else " **Incomplete: the run stopped early.**"),
        "",
        "## Plain faster-whisper, in the benchmark's process",
        "",
        "| way | wall s | media s / s | WER % | GPU MiB (process peak) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def plain_row(label: str, entry: dict[str, Any]) -> str:
        peak = entry["gpu_memory_peak"]
        value = _mib(peak, "bench_mib") if "bench_mib" in peak else _mib(peak, "device_used_mib")
        return (
            f"| {label} | {entry['wall_seconds']:.2f} | {entry['media_seconds_per_second']:.1f} | "
            f"{entry['wer']['wer_percent']:.2f} | {value} |"
        )

    lines.append(plain_row("`WhisperModel.transcribe` (sequential)", plain["sequential"]))
    for size, entry in plain["pipeline"].items():
        lines.append(plain_row(f"`BatchedInferencePipeline` batch {size}", entry))
    if "pipeline_words" in plain:
        size = plain["pipeline_words"]["batch_size"]
        lines.append(plain_row(f"pipeline batch {size}, word timestamps", plain["pipeline_words"]))
    lines += [
        "",
        "## The model server over HTTP, by MAX_BATCH_SIZE, MODEL_WORKERS and concurrency",
        "",
        "| MAX_BATCH_SIZE | MODEL_WORKERS | clients | copies | wall s | media s / s | mean batch "
        "| compute s | WER % | GPU MiB (server peak) | RSS MB (peak) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = list(server["runs"]) + ([server["words"]] if server["words"] else [])
    for run in rows:
        summary = run["model_server"]
        label = f"{run['batch_size']}" + (" (words)" if run["word_timestamps"] else "")
        lines.append(
            f"| {label} | {_workers(run)} | {run['concurrency']} | {run['copies']} | "
            f"{run['wall_seconds']:.2f} | "
            f"{run['media_seconds_per_second']:.1f} | {summary['mean_batch_size']} | "
            f"{summary['compute_seconds']} | {run['wer']['wer_percent']:.2f} | "
            f"{_mib(run['gpu_memory_peak'], 'server_mib')} | {run['server_rss_peak_mb']} |"
        )
    if server["words"] and "pipeline_words" in plain:
        same = next(
            r
            for r in server["runs"]
            if r["batch_size"] == server["words"]["batch_size"]
            and _workers(r) == _workers(server["words"])
            and r["concurrency"] == server["words"]["concurrency"]
        )
        pipe = plain["pipeline"][str(plain["pipeline_words"]["batch_size"])]
        lines += [
            "",
            f"**Word timestamps** cost the server "
            f"{server['words']['wall_seconds'] / same['wall_seconds']:.2f} x the time "
            f"(batch {same['batch_size']}, {same['concurrency']} clients), and the pipeline "
            f"{plain['pipeline_words']['wall_seconds'] / pipe['wall_seconds']:.2f} x.",
        ]
    if server.get("one_job"):
        sequential = plain["sequential"]["wall_seconds"]
        lines += [
            "",
            "## One job alone: the recording's chunks sent once, a few at a time",
            "",
            f"As the transcriber sends one job's chunks (at most CHUNK_CONCURRENCY at once, "
            f"no context lanes); against `WhisperModel.transcribe` on the whole recording "
            f"({sequential:.2f} s).",
            "",
            "| MAX_BATCH_SIZE | MODEL_WORKERS | clients | wall s | x sequential's time | WER % |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for run in server["one_job"]:
            lines.append(
                f"| {run['batch_size']} | {_workers(run)} | {run['concurrency']} | "
                f"{run['wall_seconds']:.2f} | {run['wall_seconds'] / sequential:.2f} | "
                f"{run['wer']['wer_percent']:.2f} |"
            )
    if tip:
        lines += [
            "",
            "## What to set from this run",
            "",
            f"- `MAX_BATCH_SIZE={tip['max_batch_size']}` and "
            f"`MODEL_WORKERS={tip.get('model_workers', 1)}` (`model-server.env`): the server "
            "with the fewest requests in flight within 5 % of the best throughput with full "
            f"batches (a mean batch of at least {FULL_BATCH:.0%} of the limit).",
            f"- `containerConcurrency: {tip['container_concurrency']}` (`model-server.yaml`): "
            "MAX_BATCH_SIZE x MODEL_WORKERS, the manifests' rule; a replica then serves "
            f"{tip['media_seconds_per_second_per_replica']} media s / s "
            "(the best at that batch size: "
            f"{tip['best_media_seconds_per_second_at_that_batch_size']} with "
            f"{tip['best_concurrency_at_that_batch_size']} clients).",
            f"- replicas = job rate (jobs / s) x mean media seconds / "
            f"({tip['media_seconds_per_second_per_replica']} x {tip['planned_at_utilisation']}): "
            f"for media of {tip['mean_media_seconds']:.0f} s on average (the capacity "
            f"simulation's day), {tip['replicas_per_job_per_second_of_mean_media']} replicas "
            "per job a second.",
        ]
    return "\n".join(lines)
