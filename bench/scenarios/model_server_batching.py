"""Batched decoding (the model server's) against plain sequential faster-whisper.

Decodes the same ≤ 30 s chunks of real speech two ways and prints throughput (seconds of
audio per second of compute) and word error rates:

* sequential: ``WhisperModel.transcribe(chunk, beam_size=5)``, one chunk after another;
* batched: ``BatchDecoder.decode`` on batches of ``--batch-sizes`` chunks.

The WER (``testkit.text``) is against the reference transcripts of tests/data (JFK, and
the English part of multilingual.mp3: the MIT licence; ``testkit.data``), and between the
two ways (how often batching changed a word).

    .venv/bin/python -m bench model-server-batching --model tiny.en --repeat 4
    .venv/bin/python -m bench model-server-batching --model base --batch-sizes 1,4,8

Results: ``bench/results/<name>-<date>.json`` and ``.md`` (default name
``model-server-batching``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from faster_whisper import decode_audio

from bench import report
from bench.speech import MIT_END_S, SAMPLE_RATE
from model_server.decoding import BatchDecoder, BatchOptions, ChunkRequest
from model_server.model import load_model
from model_server.settings import ModelServerSettings
from testkit.data import JFK_TEXT, MIT_TEXT
from testkit.media import JFK, MULTILINGUAL
from testkit.text import word_errors, words

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--repeat", "1", "--batch-sizes", "1,2", "--rounds", "1"]


def wer(references: list[str], hypotheses: list[str]) -> float:
    pairs = zip(references, hypotheses, strict=True)
    errors = sum(word_errors(words(r), words(h)) for r, h in pairs)
    return errors / sum(len(words(r)) for r in references)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="default")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the chunk set")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    parser.add_argument("--name", default="model-server-batching")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    info = report.machine(postgres=False)

    settings = ModelServerSettings(
        model=args.model,
        model_device=args.device,
        model_compute_type=args.compute_type,
        model_cpu_threads=args.threads,
    )
    loaded = load_model(settings)
    whisper = loaded.whisper
    jfk = decode_audio(str(JFK))
    mit = decode_audio(str(MULTILINGUAL))[: int(MIT_END_S * SAMPLE_RATE)]
    chunks = [jfk, mit] * args.repeat
    references = [JFK_TEXT, MIT_TEXT] * args.repeat
    audio_seconds = sum(len(c) for c in chunks) / SAMPLE_RATE
    language = None if loaded.multilingual else "en"
    setup = (
        f"model {loaded.name} on {loaded.device} ({loaded.compute_type}); "
        f"{len(chunks)} chunks, {audio_seconds:.0f} s of audio; best of {args.rounds} rounds"
    )
    report.log(setup)

    decoder = BatchDecoder(whisper)
    sizes = [int(size) for size in args.batch_sizes.split(",")]

    def sequential() -> list[str]:
        texts = []
        for chunk in chunks:
            segments, _ = whisper.transcribe(chunk, beam_size=5, language=language)
            texts.append("".join(s.text for s in segments))
        return texts

    def batched(size: int) -> list[str]:
        texts: list[str] = []
        for start in range(0, len(chunks), size):
            requests = [ChunkRequest(np.asarray(c), language) for c in chunks[start : start + size]]
            texts.extend(r.text for r in decoder.decode(requests, BatchOptions(beam_size=5)))
        return texts

    whisper.transcribe(jfk, beam_size=5)  # warm up
    runs = {"sequential": sequential, **{f"batch {n}": (lambda n=n: batched(n)) for n in sizes}}
    best: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):  # interleaved rounds, best of each: fairer on a busy machine
        for name, run in runs.items():
            started = time.perf_counter()
            texts[name] = run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    lines = [
        "# Batched decoding against sequential faster-whisper",
        "",
        setup + ".",
        "",
        "| way | seconds | audio s / s | WER | WER vs sequential |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    ways: dict[str, dict[str, float]] = {}
    for name, seconds in best.items():
        ways[name] = {
            "seconds": round(seconds, 3),
            "audio_seconds_per_second": round(audio_seconds / seconds, 2),
            "wer": round(wer(references, texts[name]), 4),
            "wer_vs_sequential": round(wer(texts["sequential"], texts[name]), 4),
        }
        w = ways[name]
        lines.append(
            f"| {name} | {w['seconds']:.2f} | {w['audio_seconds_per_second']:.1f} | "
            f"{w['wer']:.3f} | {w['wer_vs_sequential']:.3f} |"
        )
    print("\n".join(lines))
    result = {"machine": info, "args": vars(args) | {"out": str(args.out)}, "ways": ways}
    report.write(args.out, args.name, result, "\n".join(lines))
