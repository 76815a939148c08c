"""Transcripts rendered as OpenAI's ``response_format`` text, SRT and WebVTT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class TimedText(Protocol):
    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def text(self) -> str: ...


def to_text(segments: Sequence[TimedText]) -> str:
    return "".join(segment.text for segment in segments).strip() + "\n"


def to_srt(segments: Sequence[TimedText]) -> str:
    blocks = [
        f"{index}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for index, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[TimedText]) -> str:
    blocks = [
        f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def timestamp(seconds: float, decimal_marker: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal_marker=','``) or ``HH:MM:SS.mmm`` (WebVTT)."""
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"
