"""How a transcript is compared with its reference, everywhere (tests, drills, benchmarks).

:func:`words` normalises: lower case, every character that is not a letter or a digit a
space ("and/or" is two words, "ComfyUI" one, "don't" two). :func:`word_errors` is the
word-level Levenshtein distance (substitutions + deletions + insertions) and :func:`wer`
its rate over the reference's words. No jiwer: these few lines are the definition.
"""

from __future__ import annotations

from typing import Any


def words(text: str) -> list[str]:
    """Lower case, every character that is not a letter or digit a space, split."""
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> dict[str, Any]:
    """The word error rate of ``hypothesis`` against ``reference``, with its counts."""
    ref, hyp = words(reference), words(hypothesis)
    errors = word_errors(ref, hyp)
    return {
        "wer_percent": round(100 * errors / len(ref), 2),
        "errors": errors,
        "reference_words": len(ref),
        "hypothesis_words": len(hyp),
    }
