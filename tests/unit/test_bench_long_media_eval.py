"""How long-media-eval judges a way per file: against sequential, and against sequential's
own spread when nothing but its windows move (``--shifts``)."""

from __future__ import annotations

from typing import Any

from bench.scenarios.long_media_eval import summarise


def way(wer_percent: float) -> dict[str, Any]:
    return {
        "wer_percent": wer_percent,
        "errors": round(wer_percent),
        "reference_words": 100,
        "wall_seconds": 1.0,
        "windows": 1,
        "other_cores": 0.0,
    }


def test_a_file_counts_within_sequentials_spread_when_a_shift_scored_worse() -> None:
    files = {
        "a": {"ways": {"sequential": way(6.0), "sequential +0.1 s": way(8.0), "service": way(8.4)}},
        "b": {"ways": {"sequential": way(5.0), "sequential +0.1 s": way(4.0), "service": way(6.0)}},
    }
    service = summarise(files)["service"]
    assert service["files_within_half_point"] == 0
    assert service["files_within_half_point_of_shifted_sequential"] == 1  # a: 8.4 <= 8.0 + 0.5
    assert service["worst_points_over_sequential"] == 2.4
