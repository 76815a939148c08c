"""Captions: lines and cues within their limits, cut at words, never longer than speech."""

from __future__ import annotations

import itertools

import pytest

from transcription_core.captions import caption_cues, render_captions
from transcription_core.transcript import Segment, Word

TEXT = "And so my fellow Americans ask not what your country can do for you"


def timed(text: str, start: float, step: float, gap: float = 0.0) -> Segment:
    words = []
    t = start
    for word in text.split():
        words.append(Word(t, t + step, " " + word, 0.9))
        t += step + gap
    return Segment(start, t, text, words=words)


@pytest.mark.parametrize(("chars", "lines"), [(42, 2), (20, 1), (10, 3), (15, 2)])
def test_every_cue_keeps_to_its_limits_and_every_word_is_shown_once(chars: int, lines: int) -> None:
    for segment in (timed(TEXT, 1.0, 0.4), Segment(1.0, 8.0, TEXT)):
        cues = caption_cues([segment], chars, lines)
        for _start, _end, text in cues:
            assert len(text.split("\n")) <= lines
            assert all(len(line) <= chars for line in text.split("\n"))
        assert " ".join(text.replace("\n", " ") for *_, text in cues) == TEXT
        starts_ends = [(start, end) for start, end, _ in cues]
        assert starts_ends == sorted(starts_ends)
        assert all(start <= end for start, end in starts_ends)


def test_word_timings_bound_each_cue_to_its_speech() -> None:
    # 13 words of 0.4 s, with 1 s of silence after each: a cue ends with its last word.
    segment = timed(TEXT, 0.0, 0.4, gap=1.0)
    cues = caption_cues([segment], 20, 1)
    words = segment.words or []
    by_text = iter(words)
    for start, end, text in cues:
        shown = [next(by_text) for _ in text.split()]
        assert (start, end) == (shown[0].start, shown[-1].end)


def test_without_word_timings_the_time_is_shared_within_the_segment() -> None:
    cues = caption_cues([Segment(2.0, 8.0, TEXT)], 20, 1)
    assert cues[0][0] == 2.0 and cues[-1][1] == 8.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))


def test_a_word_longer_than_a_line_has_a_line_of_its_own() -> None:
    cues = caption_cues([Segment(0.0, 2.0, "a supercalifragilistic b")], 10, 1)
    assert [text for *_, text in cues] == ["a", "supercalifragilistic", "b"]


def test_srt_and_vtt_number_and_time_the_cues() -> None:
    segments = [timed("one two three four", 0.5, 0.5)]
    srt = render_captions(segments, "srt", 10, 1)
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,500\none two\n")
    vtt = render_captions(segments, "vtt", 10, 2)
    assert vtt == "WEBVTT\n\n00:00:00.500 --> 00:00:02.500\none two\nthree four\n"
    with pytest.raises(ValueError):
        render_captions(segments, "text")
