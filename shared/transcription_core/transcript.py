"""Rendering a transcript (the contract's JSON shape) as plain text, SRT or WebVTT."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_text(segments: Iterable[Mapping[str, Any]]) -> str:
    return " ".join(s["text"].strip() for s in segments if s["text"].strip())


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = [
        f"{n}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = [
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text'].strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


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
