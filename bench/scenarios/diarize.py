"""Speaker diarization: accuracy (DER) and cost per audio minute, on conversations with
known turns.

Run: ``.venv/bin/python -m bench diarize [--repeat 1] [--compare-senko PYTHON]``

The conversations are ``testkit.conversations``'s: three of the fixtures' real voices (two,
three and all five speakers) and two of synthetic voices (real ones resampled). For each,
the transcriber's diarization (``transcriber_service.diarization``: Resemblyzer's encoder,
average-linkage clustering) runs as a ``diarize`` job runs it, on the 16 kHz PCM file
and its VAD analysis, without a count hint and with the exact count. Scored: DER with a
0.25 s collar (missed speech, false alarm, confusion) and the speakers found.

Cost: CPU seconds of this process per minute of audio (the VAD analysis the worker has
made already is not counted; ``torch`` uses one thread, as DIARIZE_THREADS=1), the
encoder's load time, and the peak RSS. Same-run baselines: the transcription of the same
audio by tiny.en (faster-whisper, int8, beam 5, one thread), so that the cost reads
against what the job pays already, and the DER of labelling all speech as one speaker.

``--compare-senko PYTHON``: also run the ``senko`` package (CAM++ embeddings, spectral
clustering; the candidate not chosen) with that Python, one that has ``senko`` installed
(its own virtual environment: it needs torch >= 2.8, numba, umap-learn, hdbscan), on the
same conversations, as WAV files; it takes no speaker-count hint. Results:
``<out>/diarize-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from testkit.conversations import (
    Conversation,
    Score,
    Turn,
    der,
    real_voice_conversations,
    synthetic_conversations,
)

#: The options of the smallest run (``python -m bench --smoke``).
SMOKE = ["--only", "real"]

SENKO_SCRIPT = """
import json, sys, time, wave
import numpy as np
import senko
started = time.process_time(); wall = time.perf_counter()
diarizer = senko.Diarizer(device="cpu", warmup=False, quiet=True)
out = {"load_cpu_s": time.process_time() - started, "load_wall_s": time.perf_counter() - wall}
runs = []
for path in sys.argv[1:]:
    with wave.open(path) as f:
        audio = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
    started = time.process_time()
    result = diarizer.diarize_samples(audio, 16000)
    turns = [[s["start"], s["end"], s["speaker"]] for s in result["merged_segments"]]
    runs.append({"cpu_s": time.process_time() - started, "turns": turns})
out["runs"] = runs
print(json.dumps(out))
"""


def _write_wav(audio: np.ndarray, path: Path) -> None:
    pcm = (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm.tobytes())


def _score_json(score: Score, found: int) -> dict[str, Any]:
    return {
        "der": round(score.der, 4),
        "missed": round(score.missed, 4),
        "false_alarm": round(score.false_alarm, 4),
        "confusion": round(score.confusion, 4),
        "speakers_found": found,
    }


def _labelled(turns: list[Any]) -> list[Turn]:
    return [Turn(t[0], t[1], str(t[2])) for t in turns]


def run(conversations: list[Conversation], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from faster_whisper import WhisperModel

    from bench.speech import tiny_model_path
    from transcriber_service.diarization import Diarizer
    from transcription_core.audio.chunking import analyse_pcm
    from transcription_core.speakers import SpeakerHint

    torch.set_num_threads(1)
    started = time.perf_counter()
    diarizer = Diarizer(threads=1)
    load_s = time.perf_counter() - started
    whisper = WhisperModel(tiny_model_path(), device="cpu", compute_type="int8", cpu_threads=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n, talk in enumerate(conversations):
            pcm = folder / f"c{n}.pcm"
            pcm.write_bytes((np.clip(talk.audio, -1, 1 - 1 / 32768) * 32768).astype("<i2"))
            _write_wav(talk.audio, folder / f"c{n}.wav")
            analysis = analyse_pcm(pcm)
            cpu = []
            for _ in range(args.repeat):
                before = time.process_time()
                turns = diarizer.turns(pcm, analysis, SpeakerHint(), 16)
                cpu.append(time.process_time() - before)
            exact = diarizer.turns(pcm, analysis, SpeakerHint(exact=len(talk.speakers)), 16)
            before = time.process_time()
            segments, _ = whisper.transcribe(talk.audio, beam_size=5, language="en")
            list(segments)
            whisper_cpu = time.process_time() - before
            minutes = talk.duration_s / 60
            hyp = [Turn(t.start, t.end, str(t.speaker)) for t in turns]
            one = [Turn(t.start, t.end, "one") for t in talk.turns]
            rows.append(
                {
                    "conversation": talk.name,
                    "duration_s": round(talk.duration_s, 1),
                    "speakers": len(talk.speakers),
                    "reference_turns": len(talk.turns),
                    "resemblyzer": _score_json(der(talk.turns, hyp), len({t.speaker for t in hyp}))
                    | {"cpu_s_per_audio_min": round(min(cpu) / minutes, 2)},
                    "resemblyzer_exact_count": _score_json(
                        der(talk.turns, [Turn(t.start, t.end, str(t.speaker)) for t in exact]),
                        len({t.speaker for t in exact}),
                    ),
                    "baseline_one_speaker": _score_json(der(talk.turns, one), 1),
                    "baseline_tiny_en_cpu_s_per_audio_min": round(whisper_cpu / minutes, 2),
                }
            )
            report.log(f"{talk.name}: {rows[-1]['resemblyzer']}")
        senko = None
        if args.compare_senko:
            paths = [str(folder / f"c{n}.wav") for n in range(len(conversations))]
            done = subprocess.run(
                [args.compare_senko, "-c", SENKO_SCRIPT, *paths],
                capture_output=True,
                text=True,
                check=True,
            )
            senko = json.loads(done.stdout.strip().splitlines()[-1])
            for row, talk, result in zip(rows, conversations, senko["runs"], strict=True):
                hyp = _labelled(result["turns"])
                row["senko"] = _score_json(der(talk.turns, hyp), len({t.speaker for t in hyp})) | {
                    "cpu_s_per_audio_min": round(result["cpu_s"] / (talk.duration_s / 60), 2)
                }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "resemblyzer_load_s": round(load_s, 2),
        "peak_rss_mb": round(peak),
        "senko_load": None
        if senko is None
        else {"cpu_s": round(senko["load_cpu_s"], 1), "wall_s": round(senko["load_wall_s"], 1)},
    }


def _cell(score: dict[str, Any], speakers: int) -> str:
    return f"{100 * score['der']:.1f} % ({score['speakers_found']}/{speakers})"


def markdown(data: dict[str, Any]) -> str:
    result = data["result"]
    senko = result["senko_load"] is not None
    lines = [
        "# Speaker diarization: DER and cost per audio minute",
        "",
        "DER with a 0.25 s collar, and in brackets the speakers found / the speakers there "
        "are. `resemblyzer`: the transcriber's diarization (no count given); `exact`: given "
        "the count (`speakers`); `one speaker`: every word to one speaker (the baseline). "
        "Cost: CPU seconds per minute of audio, one thread; `tiny.en`: the same audio "
        "transcribed by tiny.en (int8, beam 5, one thread), in the same run.",
        "",
        "| conversation | s | resemblyzer | exact | one speaker |"
        + (" senko |" if senko else "")
        + " resemblyzer CPU s/min |"
        + (" senko CPU s/min |" if senko else "")
        + " tiny.en CPU s/min |",
        "| --- | ---: | ---: | ---: | ---: |"
        + (" ---: |" if senko else "")
        + " ---: |"
        + (" ---: |" if senko else "")
        + " ---: |",
    ]
    for row in result["rows"]:
        n = row["speakers"]
        cells = [
            row["conversation"],
            f"{row['duration_s']:g}",
            _cell(row["resemblyzer"], n),
            _cell(row["resemblyzer_exact_count"], n),
            _cell(row["baseline_one_speaker"], n),
        ]
        if senko:
            cells.append(_cell(row["senko"], n))
        cells.append(f"{row['resemblyzer']['cpu_s_per_audio_min']:g}")
        if senko:
            cells.append(f"{row['senko']['cpu_s_per_audio_min']:g}")
        cells.append(f"{row['baseline_tiny_en_cpu_s_per_audio_min']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    real = [r for r in result["rows"] if not r["conversation"].startswith("synthetic")]
    target = all(r["resemblyzer"]["der"] <= 0.10 for r in real) and all(
        r["resemblyzer"]["speakers_found"] == r["speakers"] for r in real
    )
    lines += [
        "",
        f"Target (DER at most 10 % with the right speaker count on the real-voice "
        f"conversations, no count given): **{report.met(target)}**.",
        "",
        f"Encoder load: {result['resemblyzer_load_s']} s; peak RSS of this process (the "
        f"encoder, tiny.en, the audio): {result['peak_rss_mb']} MB.",
    ]
    if senko:
        load = result["senko_load"]
        lines.append(
            f"senko's load (imports, models): {load['cpu_s']} CPU s, {load['wall_s']} s wall."
        )
    lines += ["", *report.machine_section(data["machine"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["real", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=1, help="runs per conversation (min)")
    parser.add_argument("--compare-senko", metavar="PYTHON", help="a Python with senko")
    parser.add_argument("--name", default="diarize")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    from transcription_core.speakers import diarization_installed

    if not diarization_installed():
        report.log("diarize: the diarize extra is not installed (make install-diarize); skipped")
        return 0
    machine = report.machine(postgres=False)
    conversations = real_voice_conversations()
    if args.only == "all":
        conversations += synthetic_conversations()
    result = run(conversations, args)
    data = {
        "benchmark": "diarize",
        "machine": machine,
        # Whether senko ran, not where its Python is (a path of this machine).
        "config": {k: v for k, v in vars(args).items() if k != "out"}
        | {"compare_senko": bool(args.compare_senko)},
        "result": result,
    }
    report.write(args.out, args.name, data, markdown(data))
    return 0
