"""Whisper decoding of several audio chunks at once, with the result of one-by-one decoding.

:meth:`BatchDecoder.decode` is faster-whisper's ``WhisperModel.transcribe`` (default
options, no VAD) run on many chunks in lockstep: each step takes the current 30 s window of
every unfinished chunk, encodes the windows in one batch and decodes them in one batched
beam search. Per chunk it keeps what the sequential loop keeps — where the next window
starts (``seek``), the previous text used as prompt, the temperature fallback, the
no-speech skip, the timestamp-based segment split, word alignment — so a chunk's transcript
is the one ``transcribe()`` gives for it alone, but for rounding differences of batched
matrix products. (``BatchedInferencePipeline`` batches faster but drops the fallback and the
seek, which costs accuracy; we keep them.)

Two constraints of CTranslate2 shape the batching:

* ``generate`` needs ``<|startoftranscript|>`` at the same index in every prompt, so the
  chunks of a step are decoded in groups of equal previous-text length;
* ``align`` takes one start sequence, so word alignment runs per language and task.

It reuses faster-whisper's own helpers (``get_prompt``, ``_split_segments_by_timestamps``,
``add_word_timestamps``), whose behaviour the tests pin against ``transcribe()``.

Everything here blocks: the batcher calls it in its worker thread.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from faster_whisper.utils import get_end

from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.transcript import Decoding, Segment, Transcript, Word

#: Whisper's language codes (``en``, ``de``, ...).
LANGUAGE_CODES: frozenset[str] = frozenset(_LANGUAGE_CODES)
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# faster-whisper's defaults for WhisperModel.transcribe().
_BEST_OF = 5
_PATIENCE = 1.0
_LENGTH_PENALTY = 1.0
_REPETITION_PENALTY = 1.0
_NO_REPEAT_NGRAM_SIZE = 0
_COMPRESSION_RATIO_THRESHOLD = 2.4
_LOG_PROB_THRESHOLD = -1.0
_NO_SPEECH_THRESHOLD = 0.6
_CONDITION_ON_PREVIOUS_TEXT = True
_PROMPT_RESET_ON_TEMPERATURE = 0.5
_MAX_INITIAL_TIMESTAMP = 1.0
_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001


@dataclass(frozen=True)
class BatchOptions:
    """Decoding options every chunk of one batch shares."""

    beam_size: int = 5
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES


@dataclass(frozen=True, eq=False)
class ChunkRequest:
    """One chunk of 16 kHz mono float32 audio and its own options."""

    audio: np.ndarray
    language: str | None = None
    initial_prompt: str | None = None
    word_timestamps: bool = False
    #: ``transcribe``, or ``translate`` (to English; a multilingual model only).
    task: str = "transcribe"
    #: Words to expect, put before every window's prompt (faster-whisper's ``hotwords``).
    hotwords: str | None = None

    @property
    def duration(self) -> float:
        return float(self.audio.shape[0]) / SAMPLE_RATE


@dataclass
class _Decoded:
    """One window's pick from the temperature fallback (``generate_with_fallback``)."""

    result: Any  # ctranslate2.models.WhisperGenerationResult
    avg_logprob: float
    temperature: float
    compression_ratio: float


@dataclass
class _Window:
    time_offset: float
    segment_size: int
    segment_duration: float
    prompt: list[int]
    decoded: _Decoded | None = None
    previous_seek: int = 0
    current_segments: list[dict[str, Any]] = field(default_factory=list)
    single_timestamp_ending: bool = False


@dataclass
class _ChunkState:
    request: ChunkRequest
    features: np.ndarray
    tokenizer: Tokenizer | None = None
    language_probability: float = 1.0
    seek: int = 0
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset_since: int = 0
    last_speech_timestamp: float = 0.0
    segments: list[Segment] = field(default_factory=list)

    @property
    def content_frames(self) -> int:
        return int(self.features.shape[-1]) - 1

    @property
    def finished(self) -> bool:
        return self.seek >= self.content_frames


class BatchDecoder:
    """Decodes batches of chunks with one loaded :class:`WhisperModel`."""

    def __init__(self, whisper: WhisperModel) -> None:
        self.whisper = whisper
        self._tokenizers: dict[str, Tokenizer] = {}
        self._suppress_tokens: tuple[int, ...] | None = None

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)

    def decode(self, requests: Sequence[ChunkRequest], options: BatchOptions) -> list[Transcript]:
        fe = self.whisper.feature_extractor
        states = [_ChunkState(request, fe(request.audio)) for request in requests]
        for state in states:
            if state.request.language is not None or not self.multilingual:
                self._start(state, state.request.language or "en", 1.0)
        while active := [s for s in states if not s.finished]:
            self._step(active, options)
        for state in states:
            if state.tokenizer is None:  # no audio at all: nothing to detect from
                self._start(state, "en", 0.0)
        return [
            Transcript(
                segments=state.segments,
                language=state.tokenizer.language_code if state.tokenizer else "en",
                language_probability=state.language_probability,
                duration=state.request.duration,
            )
            for state in states
        ]

    # -- one lockstep step -------------------------------------------------------------

    def _step(self, states: list[_ChunkState], options: BatchOptions) -> None:
        fe = self.whisper.feature_extractor
        sizes = [min(fe.nb_max_frames, s.content_frames - s.seek) for s in states]
        frames = [
            pad_or_trim(s.features[:, s.seek : s.seek + size])
            for s, size in zip(states, sizes, strict=True)
        ]
        encoded = _Encoded(self.whisper.encode(np.stack(frames)))

        undetected = [i for i, s in enumerate(states) if s.tokenizer is None]
        if undetected:
            # Only in a chunk's first window, which is what transcribe() detects from.
            for i, ranked in zip(
                undetected,
                self.whisper.model.detect_language(encoded.take(undetected)),
                strict=True,
            ):
                token, probability = ranked[0]
                self._start(states[i], token[2:-2], float(probability))

        windows: list[_Window] = []
        for state, segment_size in zip(states, sizes, strict=True):
            assert state.tokenizer is not None
            windows.append(
                _Window(
                    time_offset=state.seek * fe.time_per_frame,
                    segment_size=segment_size,
                    segment_duration=segment_size * fe.time_per_frame,
                    prompt=self.whisper.get_prompt(
                        state.tokenizer,
                        state.all_tokens[state.prompt_reset_since :],
                        without_timestamps=False,
                        prefix=None,
                        hotwords=state.request.hotwords,
                    ),
                )
            )
        self._generate_with_fallback(encoded, states, windows, options)

        kept: list[int] = []  # windows not skipped as silence
        for i, (state, window) in enumerate(zip(states, windows, strict=True)):
            if self._split(state, window):
                kept.append(i)
        word_indices = [i for i in kept if states[i].request.word_timestamps]
        if word_indices:
            self._add_word_timestamps(encoded, states, windows, word_indices)
        for i in kept:
            self._finish_window(states[i], windows[i])

    def _start(self, state: _ChunkState, language: str, probability: float) -> None:
        state.tokenizer = self._tokenizer(language, state.request.task)
        state.language_probability = probability
        prompt = state.request.initial_prompt
        if prompt is not None:
            state.all_tokens.extend(state.tokenizer.encode(" " + prompt.strip()))

    def _tokenizer(self, language: str, task: str) -> Tokenizer:
        if not self.multilingual:
            language, task = "en", "transcribe"
        key = f"{language}:{task}"
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self.whisper.hf_tokenizer, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def _suppressed(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        if self._suppress_tokens is None:
            self._suppress_tokens = tuple(get_suppressed_tokens(tokenizer, [-1]) or ())
        return self._suppress_tokens

    # -- generate_with_fallback, batched ----------------------------------------------

    def _generate_with_fallback(
        self,
        encoded: _Encoded,
        states: list[_ChunkState],
        windows: list[_Window],
        options: BatchOptions,
    ) -> None:
        model = self.whisper
        tokenizer = states[0].tokenizer
        assert tokenizer is not None
        candidates: list[list[_Decoded]] = [[] for _ in windows]
        below_cr_threshold: list[list[_Decoded]] = [[] for _ in windows]
        pending = list(range(len(windows)))
        common: dict[str, Any] = {
            "length_penalty": _LENGTH_PENALTY,
            "repetition_penalty": _REPETITION_PENALTY,
            "no_repeat_ngram_size": _NO_REPEAT_NGRAM_SIZE,
            "max_length": model.max_length,
            "return_scores": True,
            "return_no_speech_prob": True,
            "suppress_blank": True,
            "suppress_tokens": list(self._suppressed(tokenizer)),
            "max_initial_timestamp_index": round(_MAX_INITIAL_TIMESTAMP / model.time_precision),
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
                results = model.model.generate(
                    encoded.take(group), [windows[i].prompt for i in group], **common, **kwargs
                )
                for i, result in zip(group, results, strict=True):
                    decoded, needs_fallback = self._judge(result, temperature, states[i])
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
            windows[i].decoded = _Decoded(
                best.result, best.avg_logprob, temperature, best.compression_ratio
            )

    @staticmethod
    def _judge(result: Any, temperature: float, state: _ChunkState) -> tuple[_Decoded, bool]:
        assert state.tokenizer is not None
        tokens = result.sequences_ids[0]
        seq_len = len(tokens)
        cum_logprob = result.scores[0] * (seq_len**_LENGTH_PENALTY)
        avg_logprob = cum_logprob / (seq_len + 1)
        compression_ratio = _compression_ratio(state.tokenizer.decode(tokens).strip())
        decoded = _Decoded(result, avg_logprob, temperature, compression_ratio)

        needs_fallback = compression_ratio > _COMPRESSION_RATIO_THRESHOLD  # too repetitive
        if avg_logprob < _LOG_PROB_THRESHOLD:
            needs_fallback = True  # average log probability too low
            if result.no_speech_prob > _NO_SPEECH_THRESHOLD:
                needs_fallback = False  # silence
        return decoded, needs_fallback

    # -- per-chunk bookkeeping, as in generate_segments ----------------------------------

    def _split(self, state: _ChunkState, window: _Window) -> bool:
        """Skip a silent window or split it into segments; False when skipped."""
        decoded = window.decoded
        assert decoded is not None and state.tokenizer is not None
        should_skip = decoded.result.no_speech_prob > _NO_SPEECH_THRESHOLD
        if decoded.avg_logprob > _LOG_PROB_THRESHOLD:
            should_skip = False
        if should_skip:
            state.seek += window.segment_size
            return False
        window.previous_seek = state.seek
        segments, state.seek, window.single_timestamp_ending = (
            self.whisper._split_segments_by_timestamps(
                tokenizer=state.tokenizer,
                tokens=decoded.result.sequences_ids[0],
                time_offset=window.time_offset,
                segment_size=window.segment_size,
                segment_duration=window.segment_duration,
                seek=state.seek,
            )
        )
        window.current_segments = segments
        return True

    def _add_word_timestamps(
        self,
        encoded: _Encoded,
        states: list[_ChunkState],
        windows: list[_Window],
        indices: list[int],
    ) -> None:
        by_sequence: dict[tuple[int, ...], list[int]] = {}  # language and task
        for i in indices:
            tokenizer = states[i].tokenizer
            assert tokenizer is not None
            by_sequence.setdefault(tuple(tokenizer.sot_sequence), []).append(i)
        for group in by_sequence.values():
            tokenizer = states[group[0]].tokenizer
            assert tokenizer is not None
            text_tokens = [
                [
                    token
                    for segment in windows[i].current_segments
                    for token in segment["tokens"]
                    if token < tokenizer.eot
                ]
                for i in group
            ]
            alignments = self.whisper.find_alignment(
                tokenizer,
                text_tokens,
                encoded.take(group),
                [windows[i].segment_size for i in group],
            )
            for i, alignment in zip(group, alignments, strict=True):
                window = windows[i]
                # The library's post-processing of one window, fed our batched alignment.
                WhisperModel.add_word_timestamps(
                    _AlignedWindow(alignment, self.whisper.frames_per_second),
                    [window.current_segments],
                    tokenizer,
                    None,
                    window.segment_size,
                    _PREPEND_PUNCTUATIONS,
                    _APPEND_PUNCTUATIONS,
                    last_speech_timestamp=states[i].last_speech_timestamp,
                )

    def _finish_window(self, state: _ChunkState, window: _Window) -> None:
        decoded = window.decoded
        assert decoded is not None and state.tokenizer is not None
        if state.request.word_timestamps:
            if not window.single_timestamp_ending:
                last_word_end = get_end(window.current_segments)
                if last_word_end is not None and last_word_end > window.time_offset:
                    state.seek = round(last_word_end * self.whisper.frames_per_second)
            last_word_end = get_end(window.current_segments)
            if last_word_end is not None:
                state.last_speech_timestamp = last_word_end
        for segment in window.current_segments:
            tokens = segment["tokens"]
            text = state.tokenizer.decode(tokens)
            if segment["start"] == segment["end"] or not text.strip():
                continue
            segment = clamp_to_audio(segment, state.request.duration)
            state.all_tokens.extend(tokens)
            state.segments.append(
                Segment(
                    start=segment["start"],
                    end=segment["end"],
                    text=text,
                    words=(
                        [Word(**word) for word in segment["words"]]
                        if state.request.word_timestamps
                        else None
                    ),
                    avg_logprob=decoded.avg_logprob,
                    no_speech_prob=decoded.result.no_speech_prob,
                    decoding=Decoding(
                        seek=window.previous_seek,
                        tokens=list(tokens),
                        temperature=decoded.temperature,
                        compression_ratio=decoded.compression_ratio,
                    ),
                )
            )
        if not _CONDITION_ON_PREVIOUS_TEXT or decoded.temperature > _PROMPT_RESET_ON_TEMPERATURE:
            state.prompt_reset_since = len(state.all_tokens)


class _Encoded:
    """The encoder output of one step, and sub-batches of it."""

    def __init__(self, output: ctranslate2.StorageView) -> None:
        self.output = output
        self.batch_size = int(output.shape[0])
        self._host: np.ndarray | None = None
        self._keep_alive: list[np.ndarray] = []

    def take(self, indices: Sequence[int]) -> ctranslate2.StorageView:
        if list(indices) == list(range(self.batch_size)):
            return self.output
        if self._host is None:
            output = self.output
            if output.device != "cpu":
                output = output.to_device(ctranslate2.Device.cpu)
            self._host = np.asarray(output)
        rows = np.ascontiguousarray(self._host[list(indices)])
        self._keep_alive.append(rows)  # the StorageView borrows this memory
        return ctranslate2.StorageView.from_array(rows)


class _AlignedWindow:
    """What ``WhisperModel.add_word_timestamps`` reads from ``self``, with a ready alignment."""

    def __init__(self, alignment: list[dict[str, Any]], frames_per_second: int) -> None:
        self._alignment = alignment
        self.frames_per_second = frames_per_second

    def find_alignment(self, *_args: Any, **_kwargs: Any) -> list[list[dict[str, Any]]]:
        return [self._alignment]


def clamp_to_audio(segment: dict[str, Any], duration: float) -> dict[str, Any]:
    """``segment`` (and its words) with no time past the end of the chunk's audio.

    A sentence Whisper put off to the next window is often closed with a timestamp past
    the audio (``<|10.00|>`` on 4.7 s left): ``transcribe()`` keeps that, and a subtitle
    built from it would overlap the next chunk's first line.
    """
    words = segment.get("words") or ()
    if segment["end"] <= duration and all(w["end"] <= duration for w in words):
        return segment
    clamped = dict(segment)
    clamped["end"] = min(segment["end"], duration)
    clamped["start"] = min(segment["start"], clamped["end"])
    if words:
        clamped["words"] = [
            {**w, "start": min(w["start"], duration), "end": min(w["end"], duration)} for w in words
        ]
    return clamped


def _same_sot_index(indices: list[int], windows: list[_Window], sot: int) -> Iterator[list[int]]:
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(windows[i].prompt.index(sot), []).append(i)
    yield from groups.values()


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
