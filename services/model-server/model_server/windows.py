"""One chunk's decoding, window by window: the bookkeeping of faster-whisper's
``generate_segments`` for each chunk of a batch (:mod:`model_server.decoding`).

Per chunk it keeps where the next window starts (``seek``), the previous text used as
prompt, the no-speech skip, the timestamp-based segment split and word alignment, and
turns each decoded window into :class:`~transcription_core.transcript.Segment` s. The
temperature fallback that picks a window's decoding is :mod:`model_server.fallback`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.utils import get_end

from transcription_core.transcript import Decoding, Segment, Word

if TYPE_CHECKING:
    from model_server.decoding import ChunkRequest

# faster-whisper's defaults for WhisperModel.transcribe(), those of the bookkeeping.
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
_CONDITION_ON_PREVIOUS_TEXT = True
_PROMPT_RESET_ON_TEMPERATURE = 0.5
_PREPEND_PUNCTUATIONS = "\"'“¿([{-"
_APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001


@dataclass
class Decoded:
    """One window's pick from the temperature fallback (``generate_with_fallback``)."""

    result: Any  # ctranslate2.models.WhisperGenerationResult
    avg_logprob: float
    temperature: float
    compression_ratio: float


@dataclass
class Window:
    time_offset: float
    segment_size: int
    segment_duration: float
    prompt: list[int]
    decoded: Decoded | None = None
    previous_seek: int = 0
    current_segments: list[dict[str, Any]] = field(default_factory=list)
    single_timestamp_ending: bool = False


@dataclass
class ChunkState:
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


def split_window(whisper: WhisperModel, state: ChunkState, window: Window) -> bool:
    """Skip a silent window or split it into segments; False when skipped."""
    decoded = window.decoded
    assert decoded is not None and state.tokenizer is not None
    should_skip = decoded.result.no_speech_prob > NO_SPEECH_THRESHOLD
    if decoded.avg_logprob > LOG_PROB_THRESHOLD:
        should_skip = False
    if should_skip:
        state.seek += window.segment_size
        return False
    window.previous_seek = state.seek
    segments, state.seek, window.single_timestamp_ending = whisper._split_segments_by_timestamps(
        tokenizer=state.tokenizer,
        tokens=decoded.result.sequences_ids[0],
        time_offset=window.time_offset,
        segment_size=window.segment_size,
        segment_duration=window.segment_duration,
        seek=state.seek,
    )
    window.current_segments = segments
    return True


def add_word_timestamps(
    whisper: WhisperModel,
    encoded: Encoded,
    states: list[ChunkState],
    windows: list[Window],
    indices: list[int],
) -> None:
    by_sequence: dict[tuple[int, ...], list[int]] = {}  # one start sequence: language, task
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
        alignments = whisper.find_alignment(
            tokenizer,
            text_tokens,
            encoded.take(group),
            [windows[i].segment_size for i in group],
        )
        for i, alignment in zip(group, alignments, strict=True):
            window = windows[i]
            # The library's post-processing of one window, fed our batched alignment.
            WhisperModel.add_word_timestamps(
                _AlignedWindow(alignment, whisper.frames_per_second),
                [window.current_segments],
                tokenizer,
                None,
                window.segment_size,
                _PREPEND_PUNCTUATIONS,
                _APPEND_PUNCTUATIONS,
                last_speech_timestamp=states[i].last_speech_timestamp,
            )


def finish_window(whisper: WhisperModel, state: ChunkState, window: Window) -> None:
    decoded = window.decoded
    assert decoded is not None and state.tokenizer is not None
    if state.request.word_timestamps:
        if not window.single_timestamp_ending:
            last_word_end = get_end(window.current_segments)
            if last_word_end is not None and last_word_end > window.time_offset:
                state.seek = round(last_word_end * whisper.frames_per_second)
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


class Encoded:
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
