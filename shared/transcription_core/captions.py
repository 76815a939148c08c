"""Captions: a transcript cut into cues of at most ``max_lines`` lines of at most
``max_line_chars`` characters (42 and 2 by default, the common guidance for subtitles).

A segment with word timings is cut between words, and each cue lasts from its first word's
start to its last word's end: a cue is never on screen longer than its speech. A segment
without them is cut between words of its text, and its time shared out among its cues by
their length in characters. A word longer than a line has a line of its own.

A segment with a speaker (diarization) names it in each of its cues: WebVTT as a voice
tag, ``<v Speaker 0>`` (which players show as the cue's speaker, not as text), SRT as the
first line's opening ``[Speaker 0]``, counted in that line's length. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from transcription_core.transcript import Cue, Segment, srt, vtt

DEFAULT_MAX_LINE_CHARS = 42
DEFAULT_MAX_LINES = 2


@dataclass(frozen=True)
class _Token:
    """A word of a cue, with its times where the segment has word timings."""

    text: str
    start: float | None = None
    end: float | None = None


def caption_cues(
    segments: Iterable[Segment],
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    max_lines: int = DEFAULT_MAX_LINES,
    fmt: str = "srt",
) -> list[Cue]:
    """The cues of ``segments``, in order; a cue's text has its lines joined by ``\\n``,
    and names its speaker as ``fmt`` (srt or vtt) does, where the segment has one."""
    if max_line_chars < 1 or max_lines < 1:
        raise ValueError("max_line_chars and max_lines must be at least 1")
    cues: list[Cue] = []
    for segment in segments:
        if segment.speaker is None:
            cues.extend(_segment_cues(segment, max_line_chars, max_lines))
        elif fmt == "vtt":
            tag = f"<v Speaker {segment.speaker}>"
            cues.extend(
                (start, end, tag + text)
                for start, end, text in _segment_cues(segment, max_line_chars, max_lines)
            )
        else:
            label = f"[Speaker {segment.speaker}] "
            cues.extend(
                (start, end, label + text)
                for start, end, text in _segment_cues(
                    segment, max_line_chars, max_lines, reserve=len(label)
                )
            )
    return cues


def _segment_cues(
    segment: Segment, max_line_chars: int, max_lines: int, reserve: int = 0
) -> list[Cue]:
    if segment.words:
        tokens = [_Token(w.word.strip(), w.start, w.end) for w in segment.words if w.word.strip()]
    else:
        tokens = [_Token(word) for word in segment.text.split()]
    if not tokens:
        return []
    groups = _pack(tokens, max_line_chars, max_lines, reserve)
    if segment.words:
        return [(g[0][0].start or 0.0, g[-1][-1].end or 0.0, _text(g)) for g in groups]
    # No word timings: share the segment's time out by the cues' length.
    lengths = [len(_text(g)) for g in groups]
    total = sum(lengths)
    duration = max(segment.end - segment.start, 0.0)
    cues: list[Cue] = []
    start = segment.start
    for group, length in zip(groups, lengths, strict=True):
        end = min(start + duration * length / total, segment.end)
        cues.append((round(start, 3), round(end, 3), _text(group)))
        start = end
    return cues


def _pack(
    tokens: Sequence[_Token], max_line_chars: int, max_lines: int, reserve: int = 0
) -> list[list[list[_Token]]]:
    """Tokens into lines of at most ``max_line_chars`` (joined by spaces; the first line
    of each group has ``reserve`` characters less, for a speaker's label), lines into
    groups of at most ``max_lines``."""
    lines: list[list[_Token]] = []
    line: list[_Token] = []
    width = reserve
    for token in tokens:
        added = len(token.text) + (1 if line else 0)
        if line and width + added > max_line_chars:
            lines.append(line)
            line = []
            width = reserve if len(lines) % max_lines == 0 else 0
            added = len(token.text)
        line.append(token)
        width += added
    if line:
        lines.append(line)
    return [lines[i : i + max_lines] for i in range(0, len(lines), max_lines)]


def _text(lines: list[list[_Token]]) -> str:
    return "\n".join(" ".join(token.text for token in line) for line in lines)


def render_captions(
    segments: Sequence[Segment],
    fmt: str,
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    max_lines: int = DEFAULT_MAX_LINES,
) -> str:
    """``fmt`` is srt or vtt."""
    cues = caption_cues(segments, max_line_chars, max_lines, fmt)
    if fmt == "srt":
        return srt(cues)
    if fmt == "vtt":
        return vtt(cues)
    raise ValueError(f"captions are srt or vtt, not {fmt!r}")
