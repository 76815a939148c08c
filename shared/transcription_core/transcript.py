"""Rendering a transcript (the contract's JSON shape) as plain text, SRT or WebVTT."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: One subtitle cue: start and end in seconds, and its text.
Cue = tuple[float, float, str]


def timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal=','``) or ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_text(segments: Iterable[Mapping[str, Any]]) -> str:
    return " ".join(s["text"].strip() for s in segments if s["text"].strip())


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


def _cues(segments: Iterable[Mapping[str, Any]]) -> Iterable[Cue]:
    return ((s["start"], s["end"], s["text"]) for s in segments)


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    return srt(_cues(segments))


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    return vtt(_cues(segments))


def render(transcript: Mapping[str, Any], fmt: str) -> str:
    """``fmt`` is text, srt or vtt (json is the transcript itself)."""
    segments = transcript.get("segments", [])
    if fmt == "text":
        return transcript.get("text") or to_text(segments)
    if fmt == "srt":
        return to_srt(segments)
    if fmt == "vtt":
        return to_vtt(segments)
    raise ValueError(f"unknown transcript format {fmt!r}")
