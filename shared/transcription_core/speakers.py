"""Speaker labels for a transcript, from a diarization's speaker turns. Pure: no I/O.

A diarization (``transcription_core.audio.diarize``) answers *who spoke when* as turns:
spans of the media's timeline, each with a cluster number of its own choosing.
:func:`label_transcript` gives each word (where the transcript has word timings) the
speaker whose turns cover most of it, splits a segment where its words' speaker changes,
gives each segment the speaker who covers most of it, and numbers the speakers 0, 1, 2 ...
in the order they first speak in the transcript. Speech that no turn covers goes to the
nearest turn's speaker (a word at a turn's edge, a breath the voice detector cut off).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace

from transcription_core.transcript import Segment, Transcript, Word

#: What the ``diarize`` extra installs that the diarization imports.
DIARIZE_MODULES = ("resemblyzer", "torch", "scipy")


def diarization_installed() -> bool:
    """Whether the ``diarize`` extra is installed in this Python (nothing is imported)."""
    return all(importlib.util.find_spec(name) is not None for name in DIARIZE_MODULES)


@dataclass(frozen=True)
class SpeakerTurn:
    """A span of speech, in seconds on the media's timeline, and who spoke it (a number
    the diarization chose; :func:`label_transcript` renumbers)."""

    start: float
    end: float
    speaker: int


@dataclass(frozen=True)
class SpeakerHint:
    """The job's speaker-count hint: ``exact``, or a range (each bound optional)."""

    exact: int | None = None
    minimum: int | None = None
    maximum: int | None = None

    def bounds(self, ceiling: int) -> tuple[int, int]:
        """The least and most speakers to find, the most at most ``ceiling``."""
        if self.exact is not None:
            n = min(self.exact, ceiling)
            return n, n
        low = max(1, self.minimum or 1)
        high = min(ceiling, self.maximum or ceiling)
        return min(low, high), high


def speaker_at(turns: Sequence[SpeakerTurn], start: float, end: float) -> int | None:
    """The speaker whose turns overlap ``[start, end]`` most; if none overlaps it, the one
    whose turn is nearest; None if there are no turns."""
    if not turns:
        return None
    overlap: dict[int, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda s: (overlap[s], -s))
    middle = (start + end) / 2

    def distance(turn: SpeakerTurn) -> float:
        return max(turn.start - middle, middle - turn.end, 0.0)

    return min(turns, key=distance).speaker


def _split_by_word_speaker(segment: Segment, turns: Sequence[SpeakerTurn]) -> list[Segment]:
    """A segment with words: one segment per run of words of one speaker."""
    assert segment.words
    words = [replace(w, speaker=speaker_at(turns, w.start, w.end)) for w in segment.words]
    runs: list[list[Word]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [replace(segment, words=words, speaker=words[0].speaker)]
    return [
        replace(
            segment,
            start=run[0].start,
            end=run[-1].end,
            text="".join(w.word for w in run).strip(),
            words=run,
            speaker=run[0].speaker,
            decoding=None,
        )
        for run in runs
    ]


def label_segments(segments: Sequence[Segment], turns: Sequence[SpeakerTurn]) -> list[Segment]:
    """``segments`` (in order) with their speakers (and their words'), numbered in order of
    first speech (see the module)."""
    labelled: list[Segment] = []
    for segment in segments:
        if segment.words:
            labelled.extend(_split_by_word_speaker(segment, turns))
        else:
            labelled.append(replace(segment, speaker=speaker_at(turns, segment.start, segment.end)))
    order: dict[int, int] = {}

    def number(speaker: int | None) -> int | None:
        if speaker is None:
            return None
        return order.setdefault(speaker, len(order))

    out = []
    for segment in labelled:
        words = segment.words
        if words is not None:
            words = [replace(w, speaker=number(w.speaker)) for w in words]
        out.append(replace(segment, speaker=number(segment.speaker), words=words))
    return out


def label_transcript(transcript: Transcript, turns: Sequence[SpeakerTurn]) -> Transcript:
    """``transcript`` with its speakers (:func:`label_segments`)."""
    return replace(transcript, segments=label_segments(transcript.segments, turns))
