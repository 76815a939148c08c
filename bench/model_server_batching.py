"""Batched decoding (the model server's) against plain sequential faster-whisper.

Decodes the same ≤ 30 s chunks of real speech two ways and prints throughput (seconds of
audio per second of compute) and word error rates:

* sequential: ``WhisperModel.transcribe(chunk, beam_size=5)``, one chunk after another;
* batched: ``BatchDecoder.decode`` on batches of ``--batch-sizes`` chunks.

The WER is against the reference transcripts of tests/data (JFK, and the English part of
multilingual.mp3: the MIT licence), ignoring case and punctuation, and between the two ways
(how often batching changed a word).

    .venv/bin/python bench/model_server_batching.py --model tiny.en --repeat 4
    .venv/bin/python bench/model_server_batching.py --model base --batch-sizes 1,4,8
"""

from __future__ import annotations

import argparse
import string
import time
from pathlib import Path

import numpy as np
from faster_whisper import decode_audio
from long_media import word_errors

from model_server.decoding import BatchDecoder, BatchOptions, ChunkRequest
from model_server.model import load_model
from model_server.settings import ModelServerSettings

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
MIT = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files (the Software), to deal in the Software "
    "without restriction, including without limitation the rights to use, copy, modify, "
    "merge, publish, distribute, sublicense, and/or sell copies of the Software, and to "
    "permit persons to whom the Software is furnished to do so, subject to the following "
    "conditions: The above copyright notice and this permission notice shall be included in "
    "all copies or substantial portions of the Software."
)


def words(text: str) -> list[str]:
    table = str.maketrans("", "", string.punctuation)
    return text.lower().replace("/", " ").translate(table).split()


def wer(references: list[str], hypotheses: list[str]) -> float:
    pairs = zip(references, hypotheses, strict=True)
    errors = sum(word_errors(words(r), words(h)) for r, h in pairs)
    return errors / sum(len(words(r)) for r in references)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="default")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the chunk set")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()

    settings = ModelServerSettings(
        model=args.model,
        model_device=args.device,
        model_compute_type=args.compute_type,
        model_cpu_threads=args.threads,
    )
    loaded = load_model(settings)
    whisper = loaded.whisper
    jfk = decode_audio(str(DATA / "jfk.flac"))
    mit = decode_audio(str(DATA / "multilingual.mp3"))[: 30 * 16_000]
    chunks = [jfk, mit] * args.repeat
    references = [JFK, MIT] * args.repeat
    audio_seconds = sum(len(c) for c in chunks) / 16_000
    language = None if loaded.multilingual else "en"
    print(
        f"model {loaded.name} on {loaded.device} ({loaded.compute_type}); "
        f"{len(chunks)} chunks, {audio_seconds:.0f} s of audio"
    )

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
    for name, seconds in best.items():
        line = (
            f"{name:>10}: {seconds:6.2f} s, {audio_seconds / seconds:5.1f} audio s/s, "
            f"WER {wer(references, texts[name]):.3f}"
        )
        if name != "sequential":
            line += f", vs sequential {wer(texts['sequential'], texts[name]):.3f}"
        print(line)


if __name__ == "__main__":
    main()
