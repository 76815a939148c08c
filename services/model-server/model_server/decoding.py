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

Three modules: this one runs the lockstep steps (encode, detect the language, decode,
split); :mod:`model_server.fallback` is the batched temperature fallback;
:mod:`model_server.windows` each chunk's bookkeeping from window to window.

Everything here blocks: the batcher calls it in its worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from model_server.fallback import generate_with_fallback
from model_server.windows import (
    ChunkState,
    Encoded,
    Window,
    add_word_timestamps,
    finish_window,
    split_window,
)
from transcription_core.audio.pcm import SAMPLE_RATE
from transcription_core.transcript import Transcript

#: Whisper's language codes (``en``, ``de``, ...).
LANGUAGE_CODES: frozenset[str] = frozenset(_LANGUAGE_CODES)
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Seconds per timestamp token.
_TIME_PRECISION = 0.02
#: A chunk's context is cut to its last this many tokens (0: not cut), so that the first
#: windows of chunks with context have prompts of one length and share a ``generate``
#: call (CTranslate2 batches only prompts with ``<|startoftranscript|>`` at one index).
CONTEXT_TOKENS = 0


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
    #: What was heard just before this chunk, as segments (start s, end s, text; times
    #: 0-30 s): the first window is conditioned on them as on a previous window's output,
    #: timestamp tokens included, after ``initial_prompt`` (see
    #: ``transcription_core.audio.context``).
    context: tuple[tuple[float, float, str], ...] = ()

    @property
    def duration(self) -> float:
        return float(self.audio.shape[0]) / SAMPLE_RATE


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
        states = [ChunkState(request, fe(request.audio)) for request in requests]
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

    def _step(self, states: list[ChunkState], options: BatchOptions) -> None:
        fe = self.whisper.feature_extractor
        sizes = [min(fe.nb_max_frames, s.content_frames - s.seek) for s in states]
        frames = [
            pad_or_trim(s.features[:, s.seek : s.seek + size])
            for s, size in zip(states, sizes, strict=True)
        ]
        encoded = Encoded(self.whisper.encode(np.stack(frames)))

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

        windows: list[Window] = []
        for state, segment_size in zip(states, sizes, strict=True):
            assert state.tokenizer is not None
            windows.append(
                Window(
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
        tokenizer = states[0].tokenizer
        assert tokenizer is not None
        generate_with_fallback(
            self.whisper, encoded, states, windows, options, list(self._suppressed(tokenizer))
        )

        kept: list[int] = []  # windows not skipped as silence
        for i, (state, window) in enumerate(zip(states, windows, strict=True)):
            if split_window(self.whisper, state, window):
                kept.append(i)
        word_indices = [i for i in kept if states[i].request.word_timestamps]
        if word_indices:
            add_word_timestamps(self.whisper, encoded, states, windows, word_indices)
        for i in kept:
            finish_window(self.whisper, states[i], windows[i])

    def _start(self, state: ChunkState, language: str, probability: float) -> None:
        state.tokenizer = self._tokenizer(language, state.request.task)
        state.language_probability = probability
        prompt = state.request.initial_prompt
        if prompt is not None:
            state.all_tokens.extend(state.tokenizer.encode(" " + prompt.strip()))
        tokenizer = state.tokenizer
        context: list[int] = []
        for start, end, text in state.request.context:
            context.append(tokenizer.timestamp_begin + round(start / _TIME_PRECISION))
            context.extend(tokenizer.encode(" " + text.strip()))
            context.append(tokenizer.timestamp_begin + round(end / _TIME_PRECISION))
        if CONTEXT_TOKENS:
            context = context[-CONTEXT_TOKENS:]
        state.all_tokens.extend(context)

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
