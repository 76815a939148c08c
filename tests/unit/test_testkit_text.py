"""The one way transcripts are compared with references (testkit.text)."""

from __future__ import annotations

from testkit.text import wer, word_errors, words


def test_words_lower_case_and_split_on_anything_but_letters_and_digits() -> None:
    assert words("Ask not, my fellow Americans! and/or ComfyUI don't 2.5") == [
        "ask", "not", "my", "fellow", "americans", "and", "or", "comfyui", "don", "t", "2", "5",
    ]  # fmt: skip


def test_word_errors_count_substitutions_deletions_and_insertions() -> None:
    assert word_errors(["a", "b", "c"], ["a", "b", "c"]) == 0
    assert word_errors(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert word_errors(["a", "b", "c"], ["a", "c"]) == 1
    assert word_errors(["a", "b", "c"], ["a", "b", "b", "c"]) == 1
    assert word_errors([], ["a"]) == 1 and word_errors(["a"], []) == 1


def test_wer_is_over_the_reference_words() -> None:
    result = wer("And so, my fellow Americans", "and so my fellow american")
    assert result == {
        "wer_percent": 20.0,
        "errors": 1,
        "reference_words": 5,
        "hypothesis_words": 5,
    }
