"""Long media at once: several long jobs' audio throughput, the service against faster-whisper.

    .venv/bin/python -m bench long-media-concurrency               # 4 jobs of ~10 min (~15 min)
    .venv/bin/python -m bench long-media-concurrency --minutes 3   # a quicker look

**The jobs** (``--files``, one job each; written to a temporary folder and decoded back to
16 kHz PCM with the transcriber's ``decode_to_pcm_file`` before anything is timed): by
default the four synthetic recipes of ``long-media-eval`` (``bench.synth``, espeak-ng:
several voices taking turns, 140 to 210 words a minute, pauses of 0.2 to 6 s, WAV, MP3,
M4A and WebM), each with as many sentences as make about ``--minutes`` minutes; also
``long-real`` (the speech fixtures in turn, ``--cycles``) and the tiny fixtures ``jfk``,
``hotwords``, ``stereo`` (the smoke run's two jobs).

**The ways**, one after the other, every job of the run in each (tiny.en int8 on the CPU,
beam 5, ``language="en"``, ``--threads`` CPU threads in all for every way; time from the
decoded samples to every job's text, VAD included, decoding the media not):

* ``sequential``: ``WhisperModel(cpu_threads=T).transcribe()``, the jobs one after the
  other (its defaults: no VAD, each window conditioned on the text before it);
* ``sequential, N at once, W workers``: ``WhisperModel(num_workers=W, cpu_threads=T/W)``
  (at least 1; W x T/W threads in all: with W=4 on 2 threads, 4, more than the others, so
  the targets leave it out) and one thread per job calling ``transcribe()`` at once
  (faster-whisper runs as many calls at once as ``num_workers``; more wait);
* ``batched``: ``BatchedInferencePipeline(model of T threads).transcribe(batch_size=8)``,
  the jobs one after the other (its defaults: VAD on, no timestamps); ``batched with
  timestamps``: the same with ``without_timestamps=False``, what the service does (every
  segment timed), so the floor of a batched design on this CPU; ``batched, N at once, W
  workers``: the pipeline over the W-worker model, one thread per job;
* ``service``: a real model server process (``testkit.procs.model_server``: tiny.en, int8,
  ``MODEL_CPU_THREADS=T``, its shipped ``MAX_BATCH_SIZE`` 8, ``BATCH_WAIT_MS`` 10,
  ``MAX_QUEUED_CHUNKS`` 64), and in this process one asyncio task per job doing what a
  transcriber does with a job (``pipeline.py``, ``CONTEXT_LANES=0``): plan the chunks in a
  thread (``plan_chunks``: Silero VAD), then send every chunk as 16 kHz PCM through its own
  ``ModelServerClient`` (the transcriber's, with its own ``ModelCapacity``), at most
  ``--chunk-concurrency`` (the shipped 16) in flight per job. So the four jobs' chunks
  meet in the model server's queue and are batched together, as from four transcribers.
  The text of a job is its chunks' texts in order. Not timed: the database, downloads,
  the webhook. ``service, W workers x T/W threads`` (``--service-workers``): the same with
  ``MODEL_WORKERS=W`` and ``MODEL_CPU_THREADS=T/W``, W batches in the model at once.

Throughput is the jobs' audio seconds over the way's wall seconds. WER per job:
``testkit.text.wer``. Every way records the CPU the rest of the machine used meanwhile
(``other``: cores, from /proc/stat less this process and the model server).
Results: ``bench/results/<name>-<date>.json`` and ``.md`` (default name
``long-media-concurrency``).

Targets (issue 16): the service's throughput at least 2 x plain sequential's and at least
1 x the batched pipeline's (the best variant of each).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import measure, metrics, report, synth
from bench.scenarios.long_media_eval import RECIPES, Item, build_set
from bench.speech import SAMPLE_RATE, tiny_model_path
from testkit.data import DATA, JFK_TEXT
from testkit.machine import loadavg
from testkit.procs import descendants, model_server
from testkit.text import wer
from transcriber_service.media import decode_to_pcm_file
from transcription_core.audio.pcm import pcm_num_samples, read_pcm, read_pcm_float32

#: The smallest run (CI): two tiny fixtures as two jobs, one worker count.
SMOKE = ["--files", "jfk,hotwords", "--workers", "2", "--cycles", "1"]

BATCH = 8
TARGET_X_SEQUENTIAL = 2.0
TARGET_X_BATCHED = 1.0


@dataclass
class Job:
    name: str
    source: str
    pcm: Path
    audio: np.ndarray
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


# --- the jobs ------------------------------------------------------------------------------


def sentences_for(recipe: synth.Recipe, seconds: float) -> int:
    """How many sentences of ``recipe`` make about ``seconds`` (from a 12-sentence try)."""
    trial = synth.Recipe(**{**recipe.__dict__, "sentences": 12})
    audio, _ = synth.render(trial)
    return max(1, math.ceil(seconds / (len(audio) / SAMPLE_RATE / 12)))


def make_jobs(args: argparse.Namespace, tmp: Path) -> list[Job]:
    """The jobs, in ``--files`` order: synthetic recipes rendered at ``--minutes``, the
    other files from long-media-eval's set builder."""
    names = [n.strip() for n in args.files.split(",") if n.strip()]
    recipes = {r.name: r for r in RECIPES}
    others = [n for n in names if n not in recipes]
    found: dict[str, Item] = {}
    if others:
        built = build_set(argparse.Namespace(only=",".join(others), cycles=args.cycles), tmp)
        found = {i.name: i for i in built}
    jobs = []
    for n, name in enumerate(names):
        if name in recipes:
            recipe = recipes[name]
            recipe = synth.Recipe(
                **{**recipe.__dict__, "sentences": sentences_for(recipe, args.minutes * 60)}
            )
            audio, text = synth.render(recipe)
            media = synth.write(audio, tmp / f"{name}.{recipe.container}", recipe.container)
            source = (
                f"espeak-ng {'/'.join(recipe.voices)}, {recipe.speed} wpm, pauses "
                f"{'/'.join(str(p) for p in recipe.pauses_s)} s, {recipe.sentences} "
                f"sentences, {recipe.container}"
            )
            item = Item(name, source, media, text)
        elif name in found:
            item = found[name]
        else:
            raise SystemExit(
                f"no file {name!r}: one of jfk, hotwords, stereo, long-real, {', '.join(recipes)}"
            )
        pcm = tmp / f"job{n}-{name}.pcm"
        decode_to_pcm_file(item.media, pcm, max_duration_s=4 * 3600)
        samples = read_pcm_float32(pcm, 0, pcm_num_samples(pcm))
        jobs.append(Job(name, item.source, pcm, samples, item.reference))
        report.log(f"job {n}: {name}, {len(samples) / SAMPLE_RATE:.1f} s")
    return jobs


# --- the plain ways ------------------------------------------------------------------------


def one_text(segments: Any) -> str:
    return " ".join(s.text.strip() for s in segments)


def plain_sequential(model: Any, audio: np.ndarray) -> str:
    return one_text(model.transcribe(audio, beam_size=5, language="en")[0])


def plain_batched(pipeline: Any, audio: np.ndarray, *, timestamps: bool = False) -> str:
    return one_text(
        pipeline.transcribe(
            audio,
            beam_size=5,
            language="en",
            batch_size=BATCH,
            without_timestamps=not timestamps,
        )[0]
    )


def one_after_another(run: Callable[[np.ndarray], str], jobs: list[Job]) -> list[str]:
    return [run(job.audio) for job in jobs]


def all_at_once(run: Callable[[np.ndarray], str], jobs: list[Job]) -> list[str]:
    """One thread per job, all started together."""
    texts = [""] * len(jobs)
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            texts[i] = run(jobs[i].audio)
        except BaseException as exc:  # raised in the caller
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return texts


# --- the service's way ---------------------------------------------------------------------


async def service_jobs(url: str, jobs: list[Job], chunk_concurrency: int) -> list[str]:
    """Every job at once, each as a transcriber runs one: plan the chunks in a thread,
    then send them through its own client, ``chunk_concurrency`` in flight."""
    from transcriber_service.model_capacity import ModelCapacity
    from transcriber_service.model_client import ModelServerClient
    from transcription_core.audio.chunking import plan_chunks

    async def one(job: Job, http: httpx.AsyncClient) -> str:
        client = ModelServerClient(http, url, capacity=ModelCapacity(chunk_concurrency))
        chunks = await asyncio.to_thread(plan_chunks, job.pcm)
        gate = asyncio.Semaphore(chunk_concurrency)
        texts = [""] * len(chunks)

        async def chunk_text(i: int) -> None:
            async with gate:
                c = chunks[i]
                pcm = await asyncio.to_thread(read_pcm, job.pcm, c.start_sample, c.end_sample)
                answer = await client.predict(pcm, language="en", beam_size=5)
                texts[i] = " ".join(s.text.strip() for s in answer.segments)

        await asyncio.gather(*(chunk_text(i) for i in range(len(chunks))))
        return " ".join(t for t in texts if t)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        return list(await asyncio.gather(*(one(job, http) for job in jobs)))


# --- measuring -----------------------------------------------------------------------------


def run_service_jobs(url: str, jobs: list[Job], chunk_concurrency: int) -> list[str]:
    return asyncio.run(service_jobs(url, jobs, chunk_concurrency))


def _cpu_all() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / measure.CLK_TCK


def _cpu_own(server_pids: set[int]) -> float:
    t = os.times()
    return t.user + t.system + sum(measure.cpu_seconds(p) for p in server_pids)


def timed(
    way: str,
    run: Callable[[], list[str]],
    jobs: list[Job],
    threads_in_all: int,
    server_pids: set[int] | None = None,
) -> dict[str, Any]:
    pids = server_pids or set()
    all_before, own_before = _cpu_all(), _cpu_own(pids)
    started = time.perf_counter()
    texts = run()
    wall = time.perf_counter() - started
    own = _cpu_own(pids) - own_before
    others = (_cpu_all() - all_before) - own
    audio = sum(j.seconds for j in jobs)
    entry = {
        "wall_seconds": round(wall, 2),
        "audio_seconds": round(audio, 1),
        "audio_seconds_per_second": round(audio / wall, 2),
        "threads_in_all": threads_in_all,
        "own_cores": round(own / wall, 2),
        "other_cores": round(max(others, 0.0) / wall, 2),
        "loadavg_after": loadavg(),
        "jobs": {
            f"{n}:{j.name}": wer(j.reference, t)
            for n, (j, t) in enumerate(zip(jobs, texts, strict=True))
        },
        "texts": texts,
    }
    report.log(
        f"{way}: {entry['wall_seconds']} s, {entry['audio_seconds_per_second']} audio s/s, "
        f"others {entry['other_cores']} cores, load {entry['loadavg_after']}"
    )
    return entry


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files",
        default="synth-a,synth-b,synth-c,synth-d",
        help="comma-separated, one job each: synth-a..d, long-real, jfk, hotwords, stereo",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="per synthetic job")
    parser.add_argument("--cycles", type=int, default=10, help="of long-real")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--workers",
        default="2,4",
        help="comma-separated num_workers of the plain ways run all at once, each worker "
        "with --threads / workers threads, at least 1 (0: none); the targets compare the "
        "variants with no more than --threads threads in all",
    )
    parser.add_argument(
        "--service-workers",
        default="1,2",
        help="comma-separated MODEL_WORKERS of the service's runs, each worker with "
        "--threads / workers MODEL_CPU_THREADS, at least 1 (1: the way named `service`)",
    )
    parser.add_argument("--chunk-concurrency", type=int, default=16, help="per job in flight")
    parser.add_argument("--name", default="long-media-concurrency")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--report-only", type=Path, help="re-render the .md of a results JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        import json

        result = json.loads(args.report_only.read_text())
        report.write(args.out, args.name, result, markdown(result))
        return

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    info = report.machine(postgres=False)
    threads = args.threads
    model_path = tiny_model_path()
    ways: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="long-media-concurrency-") as tmp_name:
        tmp = Path(tmp_name)
        jobs = make_jobs(args, tmp)
        warm_pcm = tmp / "warm.pcm"
        decode_to_pcm_file(DATA / "jfk.flac", warm_pcm, max_duration_s=3600)
        warm = Job(
            "warm",
            "jfk.flac",
            warm_pcm,
            read_pcm_float32(warm_pcm, 0, pcm_num_samples(warm_pcm)),
            JFK_TEXT,
        )

        whisper = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=threads)
        pipeline = BatchedInferencePipeline(whisper)
        plain_sequential(whisper, warm.audio)
        plain_batched(pipeline, warm.audio)
        ways["sequential"] = timed(
            "sequential",
            partial(one_after_another, partial(plain_sequential, whisper), jobs),
            jobs,
            threads,
        )
        ways["batched"] = timed(
            "batched",
            partial(one_after_another, partial(plain_batched, pipeline), jobs),
            jobs,
            threads,
        )
        # What the service must do and the pipeline by default does not: timestamps.
        ways["batched with timestamps"] = timed(
            "batched with timestamps",
            partial(one_after_another, partial(plain_batched, pipeline, timestamps=True), jobs),
            jobs,
            threads,
        )

        for served in [int(w) for w in args.service_workers.split(",") if w.strip()]:
            per = max(1, threads // served)
            way = "service" if served == 1 else f"service, {served} workers x {per} threads"
            with model_server(
                tmp / "model-server.log",
                180,
                MODEL="tiny.en",
                MODEL_DEVICE="cpu",
                MODEL_COMPUTE_TYPE="int8",
                MODEL_CPU_THREADS=str(per),
                MODEL_WORKERS=str(served),
                LOG_LEVEL="WARNING",
            ) as server:
                url = server.url
                asyncio.run(service_jobs(url, [warm] * BATCH, 1))  # one full batch
                pids = {server.pid, *descendants(server.pid)}
                before = metrics.metrics(url)
                ways[way] = timed(
                    way,
                    partial(run_service_jobs, url, jobs, args.chunk_concurrency),
                    jobs,
                    served * per,
                    pids,
                )
                ways[way]["model_server"] = metrics.model_server_summary(
                    metrics.metrics_delta(before, metrics.metrics(url))
                )

        for workers in [int(w) for w in args.workers.split(",") if w.strip() and int(w) > 0]:
            per = max(1, threads // workers)
            model = WhisperModel(
                model_path,
                device="cpu",
                compute_type="int8",
                cpu_threads=per,
                num_workers=workers,
            )
            pipe = BatchedInferencePipeline(model)
            plain_sequential(model, warm.audio)
            plain_batched(pipe, warm.audio)
            label = f"{len(jobs)} at once, {workers} workers x {per} threads"
            ways[f"sequential, {label}"] = timed(
                f"sequential, {label}",
                partial(all_at_once, partial(plain_sequential, model), jobs),
                jobs,
                workers * per,
            )
            ways[f"batched, {label}"] = timed(
                f"batched, {label}",
                partial(all_at_once, partial(plain_batched, pipe), jobs),
                jobs,
                workers * per,
            )

    result = {
        "summary": summarise(ways, threads),
        "machine": info,
        "loadavg_at_end": loadavg(),
        "model": "tiny.en int8, cpu",
        "threads": threads,
        "chunk_concurrency": args.chunk_concurrency,
        "jobs": [
            {"name": j.name, "source": j.source, "seconds": round(j.seconds, 1)} for j in jobs
        ],
        "ways": ways,
    }
    report.write(args.out, args.name, result, markdown(result))


def summarise(ways: dict[str, dict[str, Any]], threads: int) -> dict[str, Any]:
    """The best plain variants with no more threads than the service, and the service's
    throughput against them."""

    def best(prefix: str) -> str:
        return max(
            (w for w in ways if w.split(",")[0] == prefix and ways[w]["threads_in_all"] <= threads),
            key=lambda w: ways[w]["audio_seconds_per_second"],
        )

    seq, bat, service = best("sequential"), best("batched"), best("service")
    rate = ways[service]["audio_seconds_per_second"]
    x_seq = round(rate / ways[seq]["audio_seconds_per_second"], 2)
    x_bat = round(rate / ways[bat]["audio_seconds_per_second"], 2)
    return {
        "best_service": service,
        "best_sequential": seq,
        "best_batched": bat,
        "service_x_sequential": x_seq,
        "service_x_batched": x_bat,
        "target_x_sequential": TARGET_X_SEQUENTIAL,
        "target_x_batched": TARGET_X_BATCHED,
        "met_x_sequential": x_seq >= TARGET_X_SEQUENTIAL,
        "met_x_batched": x_bat >= TARGET_X_BATCHED,
    }


def markdown(result: dict[str, Any]) -> str:
    ways, summary, jobs = result["ways"], result["summary"], result["jobs"]
    names = list(next(iter(ways.values()))["jobs"])
    lines = [
        "# Long media at once: several long jobs, the service against faster-whisper",
        "",
        report.machine_markdown(result["machine"]),
        f"- load average at end: {result['loadavg_at_end']}",
        "",
        f"{len(jobs)} jobs at once ("
        + ", ".join(f"{j['name']} {j['seconds']:.0f} s" for j in jobs)
        + f"; {sum(j['seconds'] for j in jobs):.0f} s of audio), {result['model']}, "
        f"{result['threads']} threads, beam 5, language en; the service: a model server "
        f"process (MAX_BATCH_SIZE 8) and {len(jobs)} transcriber-like clients, "
        f"{result['chunk_concurrency']} chunks in flight each. Time from the decoded samples "
        "(VAD included). `own`: cores this run used (this process and the model server); "
        "`other`: cores the rest of the machine used meanwhile; `audio s / own CPU s`: "
        "the audio over the CPU this run spent, which the others' load moves less than "
        "the wall time.",
        "",
        "| way | threads | wall s | audio s / wall s | x sequential | x batched | "
        "audio s / own CPU s | WER % per job ("
        + ", ".join(names)
        + ") | own | other | load after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    seq = ways[summary["best_sequential"]]["audio_seconds_per_second"]
    bat = ways[summary["best_batched"]]["audio_seconds_per_second"]
    for way, w in ways.items():
        rate = w["audio_seconds_per_second"]
        per_job = " / ".join(f"{m['wer_percent']:.2f}" for m in w["jobs"].values())
        lines.append(
            f"| {way} | {w['threads_in_all']} | {w['wall_seconds']} | {rate} | "
            f"{rate / seq:.2f} | {rate / bat:.2f} | {rate / max(w['own_cores'], 1e-9):.1f} | "
            f"{per_job} | {w['own_cores']} | {w['other_cores']} | {w['loadavg_after']} |"
        )
    best_service = summary.get("best_service", "service")
    for way, w in ways.items():
        if way.split(",")[0] == "service":
            served = w.get("model_server", {})
            lines += [
                "",
                f"Model server in `{way}`: {served.get('batches')} batches, mean batch "
                f"{served.get('mean_batch_size')}, compute {served.get('compute_seconds')} s, "
                f"{served.get('rejected_chunks')} chunks refused (queue full).",
            ]
    lines += [
        "",
        "## Targets",
        "",
        f"The service's best way: {best_service}.",
        "",
        f"- service / best sequential ({summary['best_sequential']}): "
        f"{summary['service_x_sequential']} x (target ≥ {TARGET_X_SEQUENTIAL:g}): "
        f"**{report.met(summary['met_x_sequential'])}**",
        f"- service / best batched ({summary['best_batched']}): "
        f"{summary['service_x_batched']} x (target ≥ {TARGET_X_BATCHED:g}): "
        f"**{report.met(summary['met_x_batched'])}**",
        "",
        "(analysis: see bench/README.md)",
    ]
    return "\n".join(lines)
