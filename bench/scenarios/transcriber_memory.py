"""Peak memory of the transcriber's media work (decode to PCM, then plan chunks) by length.

    .venv/bin/python -m bench transcriber-memory                  # 10 and 60 minutes
    .venv/bin/python -m bench transcriber-memory --minutes 10 120 --kind mp4

For each length it makes (once; cached in bench/results/tmp/) a video of that length from
tests/data/multilingual.mp3 played over and over (``--kind``: mov = MPEG-4 video + AAC,
mp4 = H.264 + AAC, or any kind ``testkit.media`` makes), then measures, in a fresh
process per file: the resident memory once everything is imported and the VAD model loaded,
and the peak resident memory (VmHWM, reset before each phase) while decoding and while
chunking. If the work streams, the peaks stay flat as the media gets longer; what does grow
is FFmpeg's index of an MP4 (a few MB an hour), which the allocator keeps after decoding,
so "RSS before chunking" is shown too: chunking's own share is its peak minus that.
Results: ``bench/results/transcriber-memory-<date>.json`` and ``.md``.

The child process imports only what it measures (not the report writer, not PostgreSQL's
driver), so its base memory is the transcriber's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--minutes", "1", "--kind", "wav"]


ROOT = Path(__file__).resolve().parents[2]
TMP = ROOT / "bench" / "results" / "tmp"
MULTILINGUAL_S = 59.9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--kind", default="mov", help="container kind (default: mov)")
    parser.add_argument("--name", default="transcriber-memory")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return

    from bench import report

    info = report.machine(postgres=False)
    header = ("media", "min", "file MB", "base MB", "decode peak MB", "decode s",
              "RSS before chunking MB", "chunk peak MB", "chunk s", "chunks")  # fmt: skip
    lines = [
        "# The transcriber's media work: peak memory by length",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    rows: list[dict[str, Any]] = []
    for minutes in args.minutes:
        media = make_long_media(args.kind, minutes)
        out = subprocess.run(
            [sys.executable, "-m", "bench", "transcriber-memory", "--child", str(media)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(next(x for x in reversed(out.splitlines()) if x.startswith("{")))
        rows.append({"media": media.name, "bytes": media.stat().st_size, **r})
        row = (media.name, f"{r['duration_s'] / 60:.1f}", f"{media.stat().st_size / 1e6:.0f}",
               f"{r['base_mb']:.0f}", f"{r['decode_peak_mb']:.0f}", f"{r['decode_s']:.1f}",
               f"{r['chunk_base_mb']:.0f}", f"{r['chunk_peak_mb']:.0f}", f"{r['chunk_s']:.1f}",
               str(r["chunks"]))  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
        report.log(lines[-1])
    result = {"machine": info, "kind": args.kind, "files": rows}
    report.write(args.out, args.name, result, "\n".join(lines))


def make_long_media(kind: str, minutes: float) -> Path:
    from testkit.media import MULTILINGUAL, make_media

    repeat = max(1, round(minutes * 60 / MULTILINGUAL_S))
    TMP.mkdir(parents=True, exist_ok=True)
    name = f"bench-{kind}-x{repeat}"
    existing = [p for p in TMP.glob(f"{name}.*") if p.suffix != ".pcm"]
    if existing:
        return existing[0]
    started = time.perf_counter()
    media = make_media(kind, TMP, MULTILINGUAL, repeat=repeat, name=name)
    print(f"# made {media.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return media


def measure(media: Path) -> dict[str, float]:
    from faster_whisper.vad import get_vad_model

    from transcriber_service.media import decode_to_pcm_file
    from transcription_core.audio.chunking import plan_chunks

    get_vad_model()
    from bench.measure import reset_peak_rss, rss_kib

    pcm = media.with_suffix(".pcm")
    base = rss_kib() / 1024

    reset_peak_rss()
    started = time.perf_counter()
    decoded = decode_to_pcm_file(media, pcm, max_duration_s=24 * 3600)
    decode_s = time.perf_counter() - started
    decode_peak = rss_kib(field="VmHWM") / 1024

    chunk_base = rss_kib() / 1024
    reset_peak_rss()
    started = time.perf_counter()
    chunks = plan_chunks(pcm)
    chunk_s = time.perf_counter() - started
    chunk_peak = rss_kib(field="VmHWM") / 1024
    pcm.unlink()
    return {
        "duration_s": decoded.duration_s,
        "base_mb": base,
        "decode_peak_mb": decode_peak,
        "decode_s": decode_s,
        "chunk_base_mb": chunk_base,
        "chunk_peak_mb": chunk_peak,
        "chunk_s": chunk_s,
        "chunks": len(chunks),
    }
