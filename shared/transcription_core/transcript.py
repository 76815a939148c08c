"""One transcript type, and its rendering as plain text, SRT and WebVTT.

The model server decodes a chunk (or a whole file) into a :class:`Transcript`, its client
reads one back from ``/v1/predict`` (:mod:`transcription_core.predict`, the wire schema),
and the worker assembles the chunks' transcripts into the job's. The API's shapes are
made at the edges only: :meth:`Transcript.to_json` is the job API's ``transcript`` (and
what is stored), :func:`transcription_core.predict.PredictResponse` the model server's,
and the OpenAI endpoint maps it to OpenAI's.

Times are seconds: from the start of the chunk in a chunk's transcript, from the start of
the media in a job's (:meth:`Segment.shifted` moves one to the other).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from transcription_core.storable import JsonObject

#: One subtitle cue: start and end in seconds, and its text.
Cue = tuple[float, float, str]
#: Frames per second of Whisper's features (the unit of :attr:`Decoding.seek`).
FRAMES_PER_SECOND = 100
#: The formats :meth:`Transcript.render` writes (``json`` is :meth:`Transcript.to_json`).
FORMATS = ("text", "srt", "vtt")


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float
    #: With diarization: the speaker, numbered in order of first speech (0 first).
    speaker: int | None = None

    def shifted(self, offset: float) -> Word:
        return replace(self, start=self.start + offset, end=self.end + offset)


@dataclass(frozen=True)
class Decoding:
    """How Whisper decoded a segment: what OpenAI's ``verbose_json`` shows of it. Only the
    model server has it; ``seek`` is in feature frames (:data:`FRAMES_PER_SECOND`)."""

    seek: int
    tokens: list[int]
    temperature: float
    compression_ratio: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech and its text.

    ``words`` when word timestamps were asked for; ``avg_logprob`` and ``no_speech_prob``
    as the decoder scored it (the model server sends them; stored transcripts drop them);
    ``speaker`` with diarization: who spoke it, numbered in order of first speech (0
    first; ``transcription_core.speakers``).
    """

    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    speaker: int | None = None
    #: The audio channel it was heard on (0 first), for a job's ``multichannel``.
    channel: int | None = None
    decoding: Decoding | None = field(default=None, compare=False)

    def shifted(self, offset: float) -> Segment:
        """The segment ``offset`` seconds later (a chunk's times on the media's timeline)."""
        decoding = self.decoding
        if decoding is not None:
            decoding = replace(decoding, seek=decoding.seek + round(offset * FRAMES_PER_SECOND))
        return replace(
            self,
            start=self.start + offset,
            end=self.end + offset,
            words=None if self.words is None else [w.shifted(offset) for w in self.words],
            decoding=decoding,
        )

    def to_json(self) -> JsonObject:
        """The stored and API shape: start, end, text, and words, speaker or channel if it
        has them."""
        out: JsonObject = {"start": self.start, "end": self.end, "text": self.text}
        if self.words is not None:
            out["words"] = [_word_json(w) for w in self.words]
        if self.speaker is not None:
            out["speaker"] = self.speaker
        if self.channel is not None:
            out["channel"] = self.channel
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Segment:
        words = data.get("words")
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            text=str(data["text"]),
            words=None if words is None else [Word(**w) for w in words],
            speaker=data.get("speaker"),
            channel=data.get("channel"),
        )


def _word_json(word: Word) -> JsonObject:
    out: JsonObject = {
        "start": word.start,
        "end": word.end,
        "word": word.word,
        "probability": word.probability,
    }
    if word.speaker is not None:
        out["speaker"] = word.speaker
    return out


@dataclass(frozen=True)
class Transcript:
    """The segments of a chunk, a file or a job's media, in order, and what was heard."""

    segments: list[Segment]
    language: str | None
    language_probability: float
    #: Seconds of audio transcribed.
    duration: float
    #: The model's name ("" where unknown).
    model: str = ""

    @property
    def text(self) -> str:
        return join_text(s.text for s in self.segments)

    def to_json(self) -> JsonObject:
        """The job API's ``transcript`` (see the API contract); segments numbered from 0."""
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": self.language_probability,
            "duration": self.duration,
            "model": self.model,
            "segments": [{"id": i, **s.to_json()} for i, s in enumerate(self.segments)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Transcript:
        """A transcript written by :meth:`to_json` (or a saved chunk: duration may lack)."""
        return cls(
            segments=[Segment.from_json(s) for s in data.get("segments", [])],
            language=data.get("language"),
            language_probability=float(data.get("language_probability", 0.0)),
            duration=float(data.get("duration", 0.0)),
            model=str(data.get("model") or ""),
        )

    def render(self, fmt: str) -> str:
        """``fmt`` is text, srt or vtt (json is :meth:`to_json`). With speakers, the text is
        a paragraph per change of speaker, each opened by ``Speaker N:``."""
        if fmt == "text":
            if any(s.speaker is not None for s in self.segments):
                return speaker_text(self.segments)
            return self.text
        if fmt == "srt":
            return srt(cues(self.segments))
        if fmt == "vtt":
            return vtt(cues(self.segments))
        raise ValueError(f"unknown transcript format {fmt!r}")


def join_text(texts: Iterable[str]) -> str:
    """The segments' texts, trimmed, with one space between them."""
    return " ".join(stripped for text in texts if (stripped := text.strip()))


def speaker_text(segments: Sequence[Segment]) -> str:
    """The plain text of labelled segments: a paragraph per change of speaker, each opened
    by ``Speaker N:``."""
    paragraphs: list[tuple[int | None, list[str]]] = []
    for segment in segments:
        if paragraphs and paragraphs[-1][0] == segment.speaker:
            paragraphs[-1][1].append(segment.text)
        else:
            paragraphs.append((segment.speaker, [segment.text]))
    return "\n\n".join(
        (f"Speaker {speaker}: " if speaker is not None else "") + join_text(texts)
        for speaker, texts in paragraphs
    )


def cues(segments: Sequence[Segment]) -> list[Cue]:
    return [(s.start, s.end, s.text) for s in segments]


def timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal=','``) or ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(cues: Iterable[Cue]) -> str:
    blocks = [
        f"{n}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text.strip()}\n"
        for n, (start, end, text) in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def vtt(cues: Iterable[Cue]) -> str:
    blocks = [
        f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text.strip()}\n"
        for start, end, text in cues
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
