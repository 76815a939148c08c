"""The text before a chunk, given to the model with it: context across chunk cuts.

Whisper decodes each 30 s window better when it is given what was said before it
(faster-whisper's ``transcribe()`` conditions every window on the previous windows'
tokens); a chunk decoded alone starts blind. Those tokens are *timestamped*: each segment
as ``<|start|> text <|end|>``. Given plain text instead (an ``initial_prompt``), tiny.en
stops writing timestamps inside the window and on synthetic speech with long pauses ended
windows early, dropping whole sentences (``bench long-media-eval``: WER 22 % where the
unprompted chunks had 9 %); given the previous segments with their timestamps, it matched
plain sequential decoding on that file. So the context travels as segments
(:func:`format_context`, :func:`parse_context`): the model server's ``/v1/predict``
``context`` parameter, in Whisper's own notation, ``<|0.00|> Text.<|4.20|>`` per segment,
times in seconds from 0 to 30 (a segment's times within the chunk it was heard in).

Prompting every chunk with the chunk before it would decode one job's chunks strictly one
after another, and a lone long job would lose the batching that makes the service faster
than plain sequential decoding. So a job's chunks are split into a few **lanes**,
contiguous runs of chunks (:func:`lanes`): the lanes are decoded side by side (their chunks
batch together, and with other jobs' chunks); within a lane each chunk is sent when the one
before it is done, with the lane's last segments as its context. Only a lane's first chunk
starts without context.

The transcriber (``CONTEXT_LANES``) and ``bench/scenarios/long_media_eval.py``, which
measured the designs, both use these functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: At most this many characters of text before a chunk are sent as its context: about
#: 110 tokens of English, half of the 223 tokens a Whisper prompt holds.
CONTEXT_CHARS = 500
#: At most this many segments (so with their marks a context stays far below the limit
#: below whatever segments a model server answered).
MAX_CONTEXT_SEGMENTS = 32
#: The longest ``context`` the model server's ``/v1/predict`` takes (its text and marks).
MAX_CONTEXT_CHARS = 4000
#: Whisper's timestamps: 0 to 30 s in steps of 0.02 s.
MAX_TIMESTAMP_S = 30.0
_SEGMENT = re.compile(r"<\|(\d{1,2}\.\d{2})\|>([^<>]*)<\|(\d{1,2}\.\d{2})\|>")


def lanes(chunks: Sequence[T], count: int) -> list[list[T]]:
    """``chunks`` in order, split into ``count`` contiguous runs (fewer if there are fewer
    chunks) whose lengths differ by at most one, the longer ones first."""
    if count < 1:
        raise ValueError("count must be at least 1")
    count = min(count, len(chunks))
    if count == 0:
        return []
    size, extra = divmod(len(chunks), count)
    out: list[list[T]] = []
    start = 0
    for lane in range(count):
        end = start + size + (1 if lane < extra else 0)
        out.append(list(chunks[start:end]))
        start = end
    return out


def _clean(text: str) -> str:
    return " ".join(text.replace("<", " ").replace(">", " ").split())


def format_context(
    segments: Iterable[tuple[float, float, str]], max_chars: int = CONTEXT_CHARS
) -> str | None:
    """The last of ``segments`` (start s, end s, text; in order) whose text fits in
    ``max_chars``, as ``<|0.00|> Text.<|4.20|>...``; times clamped to 0-30 s. A first
    segment longer than the rest of the room is cut to its last whole words. ``None``
    for no text."""
    kept: list[str] = []
    room = max_chars
    for start, end, text in reversed(list(segments)):
        words = _clean(text)
        if not words:
            continue
        if len(kept) == MAX_CONTEXT_SEGMENTS:
            break
        if len(words) > room:
            words = words[len(words) - room :]
            space = words.find(" ")
            words = words[space + 1 :] if space >= 0 else ""
            if words:
                kept.append(_mark(start, end, words))
            break
        kept.append(_mark(start, end, words))
        room -= len(words)
    return "".join(reversed(kept)) or None


def _mark(start: float, end: float, words: str) -> str:
    start = min(max(start, 0.0), MAX_TIMESTAMP_S) if math.isfinite(start) else 0.0
    end = min(max(end, start), MAX_TIMESTAMP_S) if math.isfinite(end) else start
    return f"<|{start:.2f}|> {words}<|{end:.2f}|>"


def parse_context(context: str) -> list[tuple[float, float, str]]:
    """The segments of a ``context`` string; ``ValueError`` (saying why) for anything but
    segments in :func:`format_context`'s notation with times from 0 to 30 s."""
    segments: list[tuple[float, float, str]] = []
    position = 0
    for match in _SEGMENT.finditer(context):
        if context[position : match.start()].strip():
            raise ValueError("text outside a <|start|> text<|end|> segment")
        start, end = float(match[1]), float(match[3])
        if not 0 <= start <= end <= MAX_TIMESTAMP_S:
            raise ValueError(
                f"segment times must satisfy 0 <= start <= end <= 30, not {start}, {end}"
            )
        segments.append((start, end, match[2].strip()))
        position = match.end()
    if context[position:].strip():
        raise ValueError("text outside a <|start|> text<|end|> segment")
    return segments
