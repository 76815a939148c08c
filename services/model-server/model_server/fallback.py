"""Whisper's temperature fallback (``generate_with_fallback``), for the windows of a
batch at once: each window is decoded at the lowest temperature first, and decoded again
one temperature higher while its text is too repetitive or too improbable (and not
silence), as ``transcribe()`` does for one; the windows of a try go through one batched
``generate`` per group of equal prompt layout.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from faster_whisper import WhisperModel

from model_server.windows import (
    LOG_PROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    ChunkState,
    Decoded,
    Encoded,
    Window,
)

if TYPE_CHECKING:
    from model_server.decoding import BatchOptions

# faster-whisper's defaults for WhisperModel.transcribe(), those of the search.
_BEST_OF = 5
_PATIENCE = 1.0
_LENGTH_PENALTY = 1.0
_REPETITION_PENALTY = 1.0
_NO_REPEAT_NGRAM_SIZE = 0
_COMPRESSION_RATIO_THRESHOLD = 2.4
_MAX_INITIAL_TIMESTAMP = 1.0


def generate_with_fallback(
    whisper: WhisperModel,
    encoded: Encoded,
    states: list[ChunkState],
    windows: list[Window],
    options: BatchOptions,
    suppress_tokens: list[int],
) -> None:
    tokenizer = states[0].tokenizer
    assert tokenizer is not None
    candidates: list[list[Decoded]] = [[] for _ in windows]
    below_cr_threshold: list[list[Decoded]] = [[] for _ in windows]
    pending = list(range(len(windows)))
    common: dict[str, Any] = {
        "length_penalty": _LENGTH_PENALTY,
        "repetition_penalty": _REPETITION_PENALTY,
        "no_repeat_ngram_size": _NO_REPEAT_NGRAM_SIZE,
        "max_length": whisper.max_length,
        "return_scores": True,
        "return_no_speech_prob": True,
        "suppress_blank": True,
        "suppress_tokens": suppress_tokens,
        "max_initial_timestamp_index": round(_MAX_INITIAL_TIMESTAMP / whisper.time_precision),
    }
    temperature = options.temperatures[0]
    for temperature in options.temperatures:
        if not pending:
            break
        if temperature > 0:
            kwargs: dict[str, Any] = {
                "beam_size": 1,
                "num_hypotheses": _BEST_OF,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
        else:
            kwargs = {"beam_size": options.beam_size, "patience": _PATIENCE}
        still_pending: list[int] = []
        for group in _same_sot_index(pending, windows, tokenizer.sot):
            results = whisper.model.generate(
                encoded.take(group), [windows[i].prompt for i in group], **common, **kwargs
            )
            for i, result in zip(group, results, strict=True):
                decoded, needs_fallback = _judge(result, temperature, states[i])
                candidates[i].append(decoded)
                if decoded.compression_ratio <= _COMPRESSION_RATIO_THRESHOLD:
                    below_cr_threshold[i].append(decoded)
                if needs_fallback:
                    still_pending.append(i)
                else:
                    windows[i].decoded = decoded
        pending = sorted(still_pending)
    for i in pending:
        # Every temperature failed: keep the most probable, as transcribe() does.
        best = max(below_cr_threshold[i] or candidates[i], key=lambda d: d.avg_logprob)
        windows[i].decoded = Decoded(
            best.result, best.avg_logprob, temperature, best.compression_ratio
        )


def _judge(result: Any, temperature: float, state: ChunkState) -> tuple[Decoded, bool]:
    assert state.tokenizer is not None
    tokens = result.sequences_ids[0]
    seq_len = len(tokens)
    cum_logprob = result.scores[0] * (seq_len**_LENGTH_PENALTY)
    avg_logprob = cum_logprob / (seq_len + 1)
    compression_ratio = _compression_ratio(state.tokenizer.decode(tokens).strip())
    decoded = Decoded(result, avg_logprob, temperature, compression_ratio)

    needs_fallback = compression_ratio > _COMPRESSION_RATIO_THRESHOLD  # too repetitive
    if avg_logprob < LOG_PROB_THRESHOLD:
        needs_fallback = True  # average log probability too low
        if result.no_speech_prob > NO_SPEECH_THRESHOLD:
            needs_fallback = False  # silence
    return decoded, needs_fallback


def _same_sot_index(indices: list[int], windows: list[Window], sot: int) -> Iterator[list[int]]:
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(windows[i].prompt.index(sot), []).append(i)
    yield from groups.values()


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
