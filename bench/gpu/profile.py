"""Where the model server's batched decoding spends its time, on one device.

    python -m bench.gpu.profile --device cuda --model-dir DIR --workload FILE --out DIR

In this process, no HTTP: the model server's :class:`BatchDecoder` on the workload's
first 1, 8 and all chunks, each phase timed (features, encode, ``generate`` with its batch
sizes and token counts, the rest), then CTranslate2's ``generate`` alone on the chunks'
first windows by batch size, with and without timestamp tokens, beam search and token
suppression, then a profile of the batch of 8. Written to
``<out>/gpu-profile-<date>.json`` and printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


class _Timed:
    """Times the calls made through it, by name, and forwards everything else."""

    def __init__(self, target: Any, totals: dict[str, list[float]], log: list[Any]) -> None:
        self._target = target
        self._totals = totals
        self._log = log

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name not in ("generate", "detect_language", "align"):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = value(*args, **kwargs)
            took = time.perf_counter() - started
            self._totals[name].append(took)
            if name == "generate":
                lengths = [len(r.sequences_ids[0]) for r in result]
                self._log.append(
                    {
                        "batch": len(lengths),
                        "beam": kwargs.get("beam_size"),
                        "tokens_max": max(lengths),
                        "tokens_sum": sum(lengths),
                        "s": round(took, 4),
                    }
                )
            return result

        return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--compute-type", default="default")
    parser.add_argument("--sizes", default="1,8,0", help="chunks per batch (0: all)")
    parser.add_argument("--variant-sizes", default="1,8,16", help="batch sizes of the variants")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)

    from faster_whisper import WhisperModel

    from bench.scenarios.gpu import Workload
    from model_server.decoding import BatchDecoder, BatchOptions, ChunkRequest

    compute_type = args.compute_type
    if compute_type == "default":
        compute_type = "float16" if args.device == "cuda" else "int8"
    workload = Workload.load(args.workload)
    whisper = WhisperModel(args.model_dir, device=args.device, compute_type=compute_type)
    chunks = workload.chunk_audio()
    decoder = BatchDecoder(whisper)
    options = BatchOptions()
    requests = [ChunkRequest(audio=a, language="en") for a in chunks]
    decoder.decode([ChunkRequest(audio=workload.warmup, language="en")] * 4, options)

    totals: dict[str, list[float]] = defaultdict(list)
    log: list[Any] = []
    real_model = whisper.model
    real_fe = whisper.feature_extractor
    real_encode = whisper.encode

    class TimedFeatures:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_fe, name)

        def __call__(self, audio: np.ndarray) -> Any:
            started = time.perf_counter()
            out = real_fe(audio)
            totals["features"].append(time.perf_counter() - started)
            return out

    fe = TimedFeatures()

    def encode(features: Any, *a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        out = real_encode(features, *a, **k)
        totals["encode"].append(time.perf_counter() - started)
        return out

    report: dict[str, Any] = {"device": args.device, "compute_type": compute_type, "runs": []}
    sizes = [int(s) or len(requests) for s in args.sizes.split(",")]
    for size in sizes:
        totals.clear()
        log.clear()
        whisper.model = _Timed(real_model, totals, log)  # type: ignore[assignment]
        whisper.feature_extractor = fe  # type: ignore[assignment]
        whisper.encode = encode  # type: ignore[method-assign]
        started = time.perf_counter()
        decoder.decode(requests[:size], options)
        wall = time.perf_counter() - started
        whisper.model, whisper.feature_extractor = real_model, real_fe
        whisper.encode = real_encode  # type: ignore[method-assign]
        phases = {name: round(sum(times), 4) for name, times in totals.items()}
        phases["other"] = round(wall - sum(phases.values()), 4)
        run = {
            "chunks": size,
            "wall_s": round(wall, 4),
            "s_per_chunk": round(wall / size, 4),
            "phases_s": phases,
            "calls": {name: len(times) for name, times in totals.items()},
            "generate_calls": list(log),
        }
        report["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "generate_calls"}), flush=True)
        print("  generate:", log[:12], "..." if len(log) > 12 else "", flush=True)

    # CTranslate2's generate alone on the chunks' first windows.
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    tokenizer = Tokenizer(whisper.hf_tokenizer, real_model.is_multilingual, "transcribe", "en")
    prompt = whisper.get_prompt(tokenizer, [], without_timestamps=False)
    common = {
        "beam_size": 5,
        "max_length": whisper.max_length,
        "return_scores": True,
        "return_no_speech_prob": True,
        "suppress_blank": True,
        "suppress_tokens": list(get_suppressed_tokens(tokenizer, [-1])),
        "max_initial_timestamp_index": 50,
    }

    # What makes a batched generate cost in proportion to its size: the variants, each on
    # the first windows of ``--variant-sizes`` chunks.
    no_ts = whisper.get_prompt(tokenizer, [], without_timestamps=True)
    variants: dict[str, tuple[list[int], dict[str, Any]]] = {
        "timestamps, beam 5 (the server)": (prompt, common),
        "no timestamps, beam 5": (no_ts, common),
        "timestamps, no no_speech_prob": (prompt, {**common, "return_no_speech_prob": False}),
        "timestamps, beam 1": (prompt, {**common, "beam_size": 1}),
        "no timestamps, beam 1": (no_ts, {**common, "beam_size": 1}),
        "timestamps, nothing suppressed": (
            prompt,
            {**common, "suppress_blank": False, "suppress_tokens": []},
        ),
    }
    all_feats = [pad_or_trim(real_fe(a)[:, : real_fe.nb_max_frames]) for a in chunks]
    rows = []
    for size in (int(s) for s in args.variant_sizes.split(",")):
        batch = whisper.encode(np.stack([all_feats[i % len(all_feats)] for i in range(size)]))
        for label, (p, kw) in variants.items():
            started = time.perf_counter()
            results = real_model.generate(batch, [p] * size, **kw)
            took = time.perf_counter() - started
            steps = max(len(r.sequences_ids[0]) for r in results)
            row = {
                "variant": label,
                "batch": size,
                "s": round(took, 4),
                "tokens_max": steps,
                "ms_per_step": round(1000 * took / max(steps, 1), 2),
            }
            rows.append(row)
            print(row, flush=True)
    report["variants"] = rows

    profile = cProfile.Profile()
    profile.enable()
    decoder.decode(requests[:8], options)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
    report["profile_8_tottime"] = text.getvalue()
    print(text.getvalue()[:6000], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-profile-{args.device}-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(report, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
