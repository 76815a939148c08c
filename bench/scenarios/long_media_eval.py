"""Long media, many recordings: the service's chunking and decoding against faster-whisper.

    .venv/bin/python -m bench long-media-eval                 # the default set, ~5 min
    .venv/bin/python -m bench long-media-eval --model base    # Whisper base (slower)
    .venv/bin/python -m bench long-media-eval --sentences 120 --cycles 10   # 10-min files

**The set** (every file written to a temporary folder, decoded back with PyAV as the
transcriber decodes it, ``transcriber_service.media.decode_to_pcm_file``):

* the real speech fixtures of ``tests/data`` as they are: ``jfk.flac``, ``hotwords.mp3``,
  ``stereo_diarization.wav`` (both speakers mixed to mono);
* ``long-real``: the fixtures played in turn with pauses (``bench.speech.compose``,
  ``--cycles`` cycles), FLAC;
* synthetic speech with known text (``bench.synth``, espeak-ng): four recipes of several
  voices taking turns, at 140 to 210 words a minute, pauses of 0.2 to 6 s between
  sentences, in WAV, MP3, M4A (AAC) and WebM (Opus), ``--sentences`` sentences each.

**The ways** (one model object, ``--threads`` CPU threads, int8, beam 5, ``language="en"``;
every way on every file in one run, ways interleaved per file):

* ``sequential``: ``WhisperModel.transcribe()``, its defaults (no VAD, each window
  conditioned on the text before it);
* ``batched``: ``BatchedInferencePipeline.transcribe(batch_size=8)``, its defaults;
* ``service``: the transcriber's chunk plan (``plan_chunks``) decoded by the model
  server's ``BatchDecoder``, 8 chunks a batch, in order, no context (``CONTEXT_LANES=0``);
* ``lanes N``: the same chunks split into N lanes (``transcription_core.audio.context``):
  each step decodes the next chunk of every lane as one batch, each with the last
  segments its lane heard, timestamps and all, as context (the transcriber's
  ``CONTEXT_LANES=N``: ``format_context``, then the model server's ``parse_context``);
  ``lanes 1`` is one chunk after the other, each with the chunk before it as context;
* ``sequential +S s`` (``--shifts``): ``transcribe()`` again with S seconds of silence
  before the audio: the same words cut into other 30 s windows, so how far plain
  faster-whisper's own WER moves on a file when nothing but its windows change.

Time is the way's wall time on the decoded samples, VAD included (the service's
``analyse_pcm``, the pipeline's own), not HTTP or the database. The model's work is
counted: 30 s encoder windows, seconds encoding and generating, tokens generated.
WER: ``testkit.text.wer``. Results: ``bench/results/<name>-<date>.json`` and ``.md``
(default name ``long-media-eval``), with the machine and the CPU others used.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench import report, synth
from bench.scenarios.long_media_designs import Counted
from bench.speech import SAMPLE_RATE, compose, tiny_model_path, write_audio
from testkit.data import DATA, HOTWORDS_TEXT, JFK_TEXT, LEFT_TEXT, RIGHT_TEXT
from testkit.machine import loadavg
from testkit.text import wer
from transcriber_service.media import decode_to_pcm_file
from transcription_core.audio.chunking import analyse_pcm, chunks_from_analysis
from transcription_core.audio.context import format_context, lanes, parse_context
from transcription_core.audio.pcm import pcm_num_samples, read_pcm_float32

SMOKE = [
    "--sentences",
    "6",
    "--cycles",
    "1",
    "--lanes",
    "4",
    "--shifts",
    "0.1",
    "--only",
    "jfk,synth-a",
]

BATCH = 8

RECIPES = (
    synth.Recipe("synth-a", ("en-us", "en-gb+f3", "en-029+m3"), 175, (0.3, 0.8, 2.5), "wav", 0),
    synth.Recipe(
        "synth-b", ("en-gb-scotland", "en-us+f4"), 140, (1.0, 4.0, 0.5), "mp3", 0, first=12
    ),
    synth.Recipe(
        "synth-c", ("en-gb-x-rp", "en-us-nyc+m2", "en+f2"), 210, (0.2, 0.6, 1.2), "m4a", 0, 2, 24
    ),
    synth.Recipe("synth-d", ("en-us+f2", "en-gb+m4"), 160, (2.0, 6.0, 0.4), "webm", 0, 4, 36),
)


@dataclass
class Item:
    name: str
    source: str
    media: Path
    reference: str


def _cpu_seconds_all() -> float:
    """CPU seconds of every process since boot (user + system), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / ticks


def _cpu_seconds_self() -> float:
    t = os.times()
    return t.user + t.system


def build_set(args: argparse.Namespace, tmp: Path) -> list[Item]:
    items = [
        Item("jfk", "tests/data/jfk.flac", DATA / "jfk.flac", JFK_TEXT),
        Item("hotwords", "tests/data/hotwords.mp3", DATA / "hotwords.mp3", HOTWORDS_TEXT),
        Item(
            "stereo",
            "tests/data/stereo_diarization.wav (mixed to mono)",
            DATA / "stereo_diarization.wav",
            f"{LEFT_TEXT} {RIGHT_TEXT}",
        ),
    ]
    samples, reference, _ = compose(args.cycles)
    items.append(
        Item(
            "long-real",
            f"bench.speech.compose({args.cycles}), FLAC",
            write_audio(samples, tmp / "long-real.flac"),
            reference,
        )
    )
    wanted = set(args.only.split(",")) if args.only else None
    for recipe in RECIPES:
        if wanted is not None and recipe.name not in wanted:
            continue
        _audio, text, media = recording(recipe, args.sentences, tmp)
        source = (
            f"espeak-ng {'/'.join(recipe.voices)}, {recipe.speed} wpm, pauses "
            f"{'/'.join(str(p) for p in recipe.pauses_s)} s, {recipe.container}"
        )
        items.append(Item(recipe.name, source, media, text))
    return [i for i in items if wanted is None or i.name in wanted]


def recording(recipe: synth.Recipe, sentences: int, tmp: Path) -> tuple[np.ndarray, str, Path]:
    """``recipe`` spoken with ``sentences`` sentences: its samples, its text, and its file
    in ``tmp`` (in the recipe's container)."""
    recipe = synth.Recipe(**{**recipe.__dict__, "sentences": sentences})
    audio, text = synth.render(recipe)
    media = synth.write(audio, tmp / f"{recipe.name}.{recipe.container}", recipe.container)
    return audio, text, media


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny.en", "base"], default="tiny.en")
    parser.add_argument("--sentences", type=int, default=24, help="per synthetic recording")
    parser.add_argument("--cycles", type=int, default=2, help="of the real long recording")
    parser.add_argument(
        "--lanes", default="8,4,1", help="comma-separated lane counts to try (0: none)"
    )
    parser.add_argument(
        "--context-chars", type=int, default=None, help="most characters of context per chunk"
    )
    parser.add_argument(
        "--context-tokens",
        type=int,
        default=None,
        help="cut each context to its last N tokens (the model server's CONTEXT_TOKENS)",
    )
    parser.add_argument(
        "--shifts",
        default="",
        help="comma-separated seconds of silence put before the audio for extra sequential "
        "runs ('sequential +S s'): how far plain faster-whisper's own WER moves per file",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--only", default="", help="comma-separated file names")
    parser.add_argument("--name", default="long-media-eval")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from model_server import decoding
    from transcription_core.audio import context

    synth.require_espeak()
    context_chars = args.context_chars or context.CONTEXT_CHARS
    if args.context_tokens is not None:
        decoding.CONTEXT_TOKENS = args.context_tokens
    info = report.machine(postgres=False)
    whisper = WhisperModel(
        _model_path(args.model), device="cpu", compute_type="int8", cpu_threads=args.threads
    )
    counted = Counted(whisper)
    pipeline = BatchedInferencePipeline(whisper)
    decoder = decoding.BatchDecoder(whisper)
    lane_counts = [int(n) for n in args.lanes.split(",") if n.strip()]

    results: dict[str, dict[str, Any]] = {}
    texts: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="long-media-eval-") as tmp_name:
        tmp = Path(tmp_name)
        items = build_set(args, tmp)
        list(whisper.transcribe(str(DATA / "jfk.flac"), beam_size=5, language="en")[0])
        for item in items:
            pcm = tmp / f"{item.name}.pcm"
            decoded = decode_to_pcm_file(item.media, pcm, max_duration_s=4 * 3600)
            audio = read_pcm_float32(pcm, 0, pcm_num_samples(pcm))

            ways: dict[str, Callable[[], str]] = {
                "sequential": partial(sequential, whisper, audio),
                "batched": partial(batched, pipeline, audio),
                "service": partial(chunked, decoder, pcm, audio, 0, context_chars),
            }
            for shift in [float(v) for v in args.shifts.split(",") if v.strip()]:
                ways[f"sequential +{shift:g} s"] = partial(sequential, whisper, audio, shift)
            for n in lane_counts:
                if n > 0:
                    ways[f"lanes {n}"] = partial(chunked, decoder, pcm, audio, n, context_chars)
            plan = chunks_from_analysis(analyse_pcm(pcm))
            entry: dict[str, Any] = {
                "source": item.source,
                "duration_s": round(decoded.duration_s, 1),
                "chunks": len(plan),
                "ways": {},
            }
            texts[item.name] = {}
            for way, run in ways.items():
                counted.reset()
                cpu_all, cpu_self = _cpu_seconds_all(), _cpu_seconds_self()
                started = time.perf_counter()
                text = run()
                wall = time.perf_counter() - started
                others = (_cpu_seconds_all() - cpu_all) - (_cpu_seconds_self() - cpu_self)
                measured = {
                    "wall_seconds": round(wall, 2),
                    "other_cores": round(max(others, 0.0) / wall, 2),
                    **{k: round(v, 2) for k, v in counted.counts.items()},
                    **wer(item.reference, text),
                }
                entry["ways"][way] = measured
                texts[item.name][way] = text
                report.log(f"{item.name}: {way}: {measured}")
            results[item.name] = entry

    result = {
        "summary": summarise(results),
        "machine": info,
        "model": args.model,
        "threads": args.threads,
        "context_chars": context_chars,
        "context_tokens": decoding.CONTEXT_TOKENS,
        "sentences": args.sentences,
        "cycles": args.cycles,
        "files": results,
        "texts": texts,
    }
    report.write(args.out, args.name, result, markdown(result))


def sequential(whisper: Any, audio: np.ndarray, shift_s: float = 0.0) -> str:
    """``transcribe()``; with ``shift_s``, after that much silence (its windows then fall
    elsewhere in the speech: the same words, other cuts)."""
    if shift_s:
        audio = np.concatenate([np.zeros(round(shift_s * SAMPLE_RATE), np.float32), audio])
    segments, _ = whisper.transcribe(audio, beam_size=5, language="en")
    return " ".join(s.text.strip() for s in segments)


def batched(pipeline: Any, audio: np.ndarray) -> str:
    segments, _ = pipeline.transcribe(audio, beam_size=5, language="en", batch_size=BATCH)
    return " ".join(s.text.strip() for s in segments)


def chunked(decoder: Any, pcm: Path, audio: np.ndarray, lane_count: int, context_chars: int) -> str:
    """The transcriber's chunk plan through the model server's decoder: 8 chunks a batch
    without context (``lane_count`` 0), or lanes in lockstep, each chunk with the last
    segments of its lane as context."""
    from model_server.decoding import BatchOptions, ChunkRequest

    options = BatchOptions(beam_size=5)
    plan = chunks_from_analysis(analyse_pcm(pcm))
    pieces = [audio[c.start_sample : c.end_sample] for c in plan]
    texts = [""] * len(pieces)
    if lane_count == 0:
        for i in range(0, len(pieces), BATCH):
            requests = [ChunkRequest(p, language="en") for p in pieces[i : i + BATCH]]
            for j, r in enumerate(decoder.decode(requests, options)):
                texts[i + j] = r.text
        return " ".join(texts)
    runs = lanes(list(range(len(pieces))), lane_count)
    heard: list[list[tuple[float, float, str]]] = [[] for _ in runs]
    for step in range(max(len(r) for r in runs)):
        heads = [(n, r[step]) for n, r in enumerate(runs) if step < len(r)]
        for i in range(0, len(heads), BATCH):
            group = heads[i : i + BATCH]
            requests = []
            for n, k in group:
                # As the transcriber sends it and the model server reads it.
                context = format_context(heard[n], context_chars)
                segments = tuple(parse_context(context)) if context else ()
                requests.append(ChunkRequest(pieces[k], language="en", context=segments))
            for (n, k), r in zip(group, decoder.decode(requests, options), strict=True):
                texts[k] = r.text
                heard[n] = [(s.start, s.end, s.text) for s in r.segments]
    return " ".join(texts)


def _model_path(name: str) -> str:
    """tiny.en (bundled), or base, joined from its packages as the model server does."""
    if name == "tiny.en":
        return tiny_model_path()
    from model_server.model import resolve_model
    from model_server.settings import ModelServerSettings

    return str(resolve_model(name, ModelServerSettings().model_cache_dir)[1])


def sequential_spread(ways: dict[str, Any]) -> float:
    """The worst WER of plain sequential on a file: unshifted or after any ``--shifts``."""
    return max(m["wer_percent"] for way, m in ways.items() if way.startswith("sequential"))


def summarise(files: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per way, over every file: WER, wall time against sequential's, the files within
    0.5 points of sequential's WER (and, with ``--shifts``, of sequential's worst on the
    file, shifted or not), the cores others used (mean of the runs)."""
    ways = list(next(iter(files.values()))["ways"]) if files else []
    out: dict[str, dict[str, Any]] = {}
    for way in ways:
        runs = [(f["ways"][way], f["ways"]["sequential"]) for f in files.values()]
        worst_sequential = [sequential_spread(f["ways"]) for f in files.values()]
        errors = sum(m["errors"] for m, _ in runs)
        reference = sum(m["reference_words"] for m, _ in runs)
        wall = sum(m["wall_seconds"] for m, _ in runs)
        out[way] = {
            "wer_percent": round(100 * errors / max(reference, 1), 2),
            "errors": errors,
            "reference_words": reference,
            "wall_seconds": round(wall, 2),
            "x_sequential": round(wall / max(sum(q["wall_seconds"] for _, q in runs), 1e-9), 2),
            "windows": sum(m["windows"] for m, _ in runs),
            "files_within_half_point": sum(
                1 for m, q in runs if m["wer_percent"] <= q["wer_percent"] + 0.5
            ),
            "files_within_half_point_of_shifted_sequential": sum(
                1
                for (m, _), worst in zip(runs, worst_sequential, strict=True)
                if m["wer_percent"] <= worst + 0.5
            ),
            "files": len(runs),
            "worst_points_over_sequential": round(
                max(m["wer_percent"] - q["wer_percent"] for m, q in runs), 2
            ),
            "other_cores_mean": round(sum(m["other_cores"] for m, _ in runs) / len(runs), 2),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    files = result["files"]
    lines = [
        "# Long media, many recordings: the service's chunking and decoding against faster-whisper",
        "",
        report.machine_markdown(result["machine"]),
        f"- load average at end: {loadavg()}",
        "",
        f"{result['model']} int8, {result['threads']} threads, beam 5, language en; "
        f"lanes: each chunk with at most {result['context_chars']} characters of context. "
        "Time: wall seconds on the decoded samples, VAD included; `x seq`: against "
        "sequential on the same file; other: cores other processes used meanwhile.",
        "",
        "| file | source | s | chunks | way | WER % | +pts vs seq | wall s | x seq | "
        "windows | tokens | other |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, f in files.items():
        seq = f["ways"]["sequential"]
        for way, m in f["ways"].items():
            lines.append(
                f"| {name} | {f['source']} | {f['duration_s']} | {f['chunks']} | {way} | "
                f"{m['wer_percent']} | {m['wer_percent'] - seq['wer_percent']:+.2f} | "
                f"{m['wall_seconds']} | {m['wall_seconds'] / seq['wall_seconds']:.2f} | "
                f"{m['windows']:.0f} | {m['tokens']:.0f} | {m['other_cores']} |"
            )
    lines += [
        "",
        "All files together:",
        "",
        "| way | WER % | wall s | x seq | windows | files within +0.5 pts of seq | "
        "... of seq's worst, shifted or not | worst +pts | other (mean) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for way, t in result["summary"].items():
        lines.append(
            f"| {way} | {t['wer_percent']} | {t['wall_seconds']} | {t['x_sequential']} | "
            f"{t['windows']} | {t['files_within_half_point']} / {t['files']} | "
            f"{t['files_within_half_point_of_shifted_sequential']} / {t['files']} | "
            f"{t['worst_points_over_sequential']:+.2f} | {t['other_cores_mean']} |"
        )
    lines += ["", "(analysis: see bench/README.md)"]
    return "\n".join(lines)
