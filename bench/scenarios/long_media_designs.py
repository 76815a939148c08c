"""Where the long-media time goes: chunking designs on the model alone, in one process.

    .venv/bin/python -m bench long-media-designs              # 10 cycles, 2 rounds, ~3 min
    .venv/bin/python -m bench long-media-designs --cycles 2 --rounds 1   # a quick look

``long-media`` times the whole service; this one asks why it is not within 1.15 x of
faster-whisper's ``BatchedInferencePipeline``, and what other ways of cutting the same
recording (``bench.speech.compose``) would cost. Every design decodes with the same
tiny.en int8 model object, 2 CPU threads (nproc), beam 5, ``language="en"``, rounds
interleaved, and counts what the model did: 30 s encoder windows, seconds in
``encode``, seconds in ``generate``, tokens generated. A design's wall time includes its
voice activity detection (the batched pipeline's own; ours: ``analyse_pcm`` on the PCM
file, as the transcriber runs it), not the service's HTTP, database or decoding.

* ``batched``: ``BatchedInferencePipeline.transcribe(batch_size=8)``, its defaults (no
  timestamps, no seek: a sentence Whisper puts off to the next window is lost);
* ``batched, timestamps``: the same with ``without_timestamps=False``;
* ``service``: the model server's ``BatchDecoder`` (``transcribe()``'s seek loop, the
  temperature fallback, the previous text as prompt) on the transcriber's own chunk plan
  (``plan_chunks``: up to 30 s, pauses kept), 8 chunks a batch, in order;
* ``sections``: the ~20-window design the last report asked for: the speech regions with
  every pause shortened to at most ``--gap`` s, cut into 8 sections of equal speech at
  region boundaries (one batch, 53 to 80 s each), each decoded by ``BatchDecoder``'s seek
  loop as one request, without the previous text as prompt (prompts of different lengths
  cannot share a batch in CTranslate2). Sections are not chunks of at most 30 s, which
  the issue asks for, and their timestamps would need mapping back; this only measures.

Results: ``bench/results/<name>-<date>.json`` and ``.md`` (default name
``long-media-designs``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.speech import SAMPLE_RATE, compose, tiny_model_path, write_audio
from testkit.data import DATA
from testkit.machine import loadavg
from testkit.text import wer
from transcriber_service.media import decode_to_pcm_file
from transcription_core.audio.chunking import (
    DEFAULT_VAD_OPTIONS,
    analyse_pcm,
    chunks_from_analysis,
    speech_regions,
)
from transcription_core.audio.pcm import pcm_num_samples, read_pcm_float32

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--cycles", "1", "--rounds", "1"]


BATCH = 8
SECTIONS = 8


class Counted:
    """The model's ``encode`` and ``generate``, counted and timed."""

    def __init__(self, whisper: Any) -> None:
        self.counts: dict[str, float] = {}
        self.reset()
        encode = whisper.encode

        def counted_encode(features: Any) -> Any:
            started = time.perf_counter()
            out = encode(features)
            self.counts["encode_seconds"] += time.perf_counter() - started
            # transcribe() encodes one window as (mels, frames), batches as (n, mels, frames)
            self.counts["windows"] += int(features.shape[0]) if features.ndim == 3 else 1
            return out

        whisper.encode = counted_encode
        whisper.model = _CountedGenerate(whisper.model, self.counts)

    def reset(self) -> None:
        self.counts.clear()
        self.counts.update(
            windows=0, encode_seconds=0.0, generate_seconds=0.0, tokens=0, generate_calls=0
        )


class _CountedGenerate:
    def __init__(self, inner: Any, counts: dict[str, float]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        results = self._inner.generate(*args, **kwargs)
        self._counts["generate_seconds"] += time.perf_counter() - started
        self._counts["generate_calls"] += 1
        self._counts["tokens"] += sum(len(r.sequences_ids[0]) for r in results)
        return results


def sections(pcm: Path, audio: np.ndarray, gap_s: float, count: int) -> list[np.ndarray]:
    """The speech with pauses shortened to ``gap_s``, in ``count`` sections of equal speech."""
    analysis = analyse_pcm(pcm)
    regions = [
        list(r) for r in speech_regions(analysis.speech_probs, len(audio), DEFAULT_VAD_OPTIONS)
    ]
    keep = int(gap_s * SAMPLE_RATE)
    for here, following in itertools.pairwise(regions):
        gap = following[0] - here[1]
        if gap <= keep:
            here[1] = following[0]
        else:
            here[1] += keep // 2
            following[0] -= keep - keep // 2
    total = sum(end - start for start, end in regions)
    cut: list[list[list[int]]] = [[]]
    spoken = 0
    for region in regions:
        cut[-1].append(region)
        spoken += region[1] - region[0]
        if spoken >= total * len(cut) / count and len(cut) < count:
            cut.append([])
    return [np.concatenate([audio[s:e] for s, e in part]) for part in cut if part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.8, help="longest pause kept in sections")
    parser.add_argument("--name", default="long-media-designs")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from model_server import decoding

    threads = len(os.sched_getaffinity(0))
    samples, reference, _ = compose(args.cycles)
    whisper = WhisperModel(
        tiny_model_path(), device="cpu", compute_type="int8", cpu_threads=threads
    )
    counted = Counted(whisper)
    pipeline = BatchedInferencePipeline(whisper)
    decoder = decoding.BatchDecoder(whisper)
    options = decoding.BatchOptions(beam_size=5)

    with tempfile.TemporaryDirectory(prefix="long-media-designs-") as tmp_name:
        media = write_audio(samples, Path(tmp_name) / "long-speech.flac")
        pcm = Path(tmp_name) / "long-speech.pcm"
        decode_to_pcm_file(media, pcm, max_duration_s=4 * 3600)
        audio = read_pcm_float32(pcm, 0, pcm_num_samples(pcm))

        def batched(without_timestamps: bool) -> str:
            segments, _ = pipeline.transcribe(
                audio,
                beam_size=5,
                language="en",
                batch_size=BATCH,
                without_timestamps=without_timestamps,
            )
            return " ".join(s.text.strip() for s in segments)

        def decode_all(pieces: list[np.ndarray], condition: bool = True) -> str:
            saved = decoding._CONDITION_ON_PREVIOUS_TEXT
            decoding._CONDITION_ON_PREVIOUS_TEXT = condition
            try:
                texts: list[str] = []
                for i in range(0, len(pieces), BATCH):
                    requests = [
                        decoding.ChunkRequest(p, language="en") for p in pieces[i : i + BATCH]
                    ]
                    texts.extend(r.text for r in decoder.decode(requests, options))
                return " ".join(texts)
            finally:
                decoding._CONDITION_ON_PREVIOUS_TEXT = saved

        def service() -> str:
            plan = chunks_from_analysis(analyse_pcm(pcm))
            return decode_all([audio[c.start_sample : c.end_sample] for c in plan])

        def sectioned() -> str:
            return decode_all(sections(pcm, audio, args.gap, SECTIONS), condition=False)

        designs: dict[str, Callable[[], str]] = {
            "batched": lambda: batched(True),
            "batched, timestamps": lambda: batched(False),
            "service": service,
            f"sections ({SECTIONS}, pauses <= {args.gap} s, no prompt)": sectioned,
        }
        list(whisper.transcribe(str(DATA / "jfk.flac"), beam_size=5, language="en")[0])
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in designs}
        texts: dict[str, str] = {}
        info = report.machine(postgres=False)
        for round_ in range(args.rounds):
            for name, run in designs.items():
                counted.reset()
                started = time.perf_counter()
                text = run()
                wall = time.perf_counter() - started
                entry = {"wall_seconds": round(wall, 2), "loadavg": loadavg()}
                entry.update({k: round(v, 2) for k, v in counted.counts.items()})
                runs[name].append(entry)
                texts[name] = text
                report.log(f"round {round_}: {name}: {entry}")

    summary = {}
    base = min(r["wall_seconds"] for r in runs["batched"])
    for name, entries in runs.items():
        best = min(entries, key=lambda r: r["wall_seconds"])
        summary[name] = {
            **best,
            "x_batched": round(best["wall_seconds"] / base, 2),
            **wer(reference, texts[name]),
        }
    result = {
        "machine": info,
        "threads": threads,
        "summary": summary,
        "runs": runs,
        "texts": texts,
        "gap_s": args.gap,
        "cycles": args.cycles,
    }
    lines = [
        "# Long media: chunking designs on the model alone",
        "",
        report.machine_markdown(info),
        f"- load average at end: {loadavg()}",
        "",
        f"{len(samples) / SAMPLE_RATE:.0f} s recording (bench.speech.compose, "
        f"{args.cycles} cycles), "
        f"tiny.en int8, {threads} threads, beam 5, best of {args.rounds} interleaved rounds.",
        "",
        "| design | wall s | x batched | windows | encode s | generate s | tokens | WER % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['wall_seconds']} | {s['x_batched']} | {s['windows']:.0f} | "
            f"{s['encode_seconds']} | {s['generate_seconds']} | {s['tokens']:.0f} | "
            f"{s['wer_percent']} |"
        )
    lines += ["", "(analysis: see bench/README.md)"]
    report.write(args.out, args.name, result, "\n".join(lines))
