"""Context across chunk cuts (``transcription_core.audio.context``): lanes, and the
segments a chunk is sent with, as the transcriber writes them and the model server reads
them."""

from __future__ import annotations

import pytest

from transcription_core.audio.context import (
    MAX_CONTEXT_CHARS,
    format_context,
    lanes,
    parse_context,
)


def test_lanes_are_contiguous_runs_of_nearly_equal_length_in_order() -> None:
    assert lanes(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert lanes(list(range(4)), 1) == [[0, 1, 2, 3]]
    assert lanes(list(range(2)), 4) == [[0], [1]]  # never an empty lane
    assert lanes([], 4) == []
    with pytest.raises(ValueError):
        lanes([1], 0)


def test_the_context_is_the_last_segments_with_their_times_in_whisper_notation() -> None:
    heard = [(0.0, 4.2, " And so my fellow Americans,"), (4.2, 31.5, " ask not.")]
    context = format_context(heard)
    # The end past the 30 s window (a deferred sentence's segment) is clamped.
    assert context == "<|0.00|> And so my fellow Americans,<|4.20|><|4.20|> ask not.<|30.00|>"
    assert parse_context(context) == [
        (0.0, 4.2, "And so my fellow Americans,"),
        (4.2, 30.0, "ask not."),
    ]
    assert format_context([]) is None and format_context([(0.0, 1.0, "  ")]) is None


def test_the_context_keeps_the_end_in_whole_words_and_no_marks_from_the_text() -> None:
    heard = [(0.0, 5.0, "alpha beta gamma"), (5.0, 9.0, "delta <|0.00|> epsilon")]
    assert (
        format_context(heard, 26) == "<|0.00|> gamma<|5.00|><|5.00|> delta |0.00| epsilon<|9.00|>"
    )
    assert format_context(heard, 10) == "<|5.00|> epsilon<|9.00|>"


@pytest.mark.parametrize(
    "bad",
    [
        "plain text",
        "<|0.00|> ok<|1.00|> trailing",
        "<|0.00|> ok<|31.00|>",
        "<|2.00|> backwards<|1.00|>",
        "<|0.0|> short<|1.00|>",
    ],
)
def test_anything_but_segments_within_the_window_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_context(bad)


def test_whatever_segments_a_model_server_answered_the_context_stays_within_the_limit() -> None:
    many = [(float(i), float(i) + 0.5, "a") for i in range(500)]
    context = format_context(many)
    assert context is not None and len(context) < MAX_CONTEXT_CHARS
    assert len(parse_context(context)) == 32
    odd = format_context([(float("nan"), float("inf"), "word"), (-3.0, 99.0, "more")])
    assert odd == "<|0.00|> word<|0.00|><|0.00|> more<|30.00|>"
