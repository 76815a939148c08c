"""Transcripts rendered as OpenAI's ``response_format`` text, SRT and WebVTT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from transcription_core.transcript import srt, timestamp, vtt

__all__ = ["TimedText", "timestamp", "to_srt", "to_text", "to_vtt"]


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
    return srt((s.start, s.end, s.text) for s in segments)


def to_vtt(segments: Sequence[TimedText]) -> str:
    return vtt((s.start, s.end, s.text) for s in segments)
