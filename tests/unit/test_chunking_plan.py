"""The pure chunk planner on made-up VAD probabilities and energies, where the answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from transcription_core.audio.chunking import (
    ENERGY_HOP,
    VAD_FRAME,
    SpeechAnalysis,
    chunks_from_analysis,
    split_at_quietest,
)
from transcription_core.audio.pcm import SAMPLE_RATE

PAD = SAMPLE_RATE * 200 // 1000  # DEFAULT_VAD_OPTIONS.speech_pad_ms


def on_grid(seconds: float) -> int:
    """The sample where a VAD frame starts at or before ``seconds``."""
    return int(seconds * SAMPLE_RATE) // VAD_FRAME * VAD_FRAME


def analysis(seconds: float, speech: list[tuple[float, float]], quiet_at: tuple[float, ...] = ()):
    """``seconds`` of audio, speech in the given spans, energy dips at ``quiet_at``."""
    num_samples = int(seconds * SAMPLE_RATE)
    probs = np.zeros(-(-num_samples // VAD_FRAME), dtype=np.float32)
    energy = np.full(-(-num_samples // ENERGY_HOP), 1e-9)
    for start, end in speech:
        probs[int(start * SAMPLE_RATE) // VAD_FRAME : int(end * SAMPLE_RATE) // VAD_FRAME] = 0.9
        energy[int(start * SAMPLE_RATE) // ENERGY_HOP : int(end * SAMPLE_RATE) // ENERGY_HOP] = 0.01
    for t in quiet_at:
        hop = int(t * SAMPLE_RATE) // ENERGY_HOP
        energy[hop - 5 : hop + 5] = 1e-6
    return SpeechAnalysis(num_samples=num_samples, speech_probs=probs, energy=energy)


def spans(chunks) -> list[tuple[int, int]]:
    return [(c.start_sample, c.end_sample) for c in chunks]


def test_pauses_of_any_length_stay_inside_a_chunk_that_has_room() -> None:
    # Pauses of 3, 6 and 9 s: the speech around them fits one 30 s window, so one chunk.
    plan = analysis(40, [(1, 4), (7, 10), (16, 19), (28, 30)])

    chunks = chunks_from_analysis(plan)

    assert spans(chunks) == [(on_grid(1) - PAD, on_grid(30) + PAD)]


def test_a_chunk_closes_only_when_the_next_region_would_not_fit() -> None:
    # 8 s sentences, each after a 4 s pause: two sentences and their pause make 20.4 s,
    # a third would make 32.4 s. So chunks of two sentences; the pause between chunks
    # is not sent.
    speech = [(1 + 12 * i, 9 + 12 * i) for i in range(8)]
    plan = analysis(100, speech)

    chunks = chunks_from_analysis(plan, max_chunk_s=30.0)

    assert spans(chunks) == [
        (on_grid(1 + 24 * k) - PAD, on_grid(21 + 24 * k) + PAD) for k in range(4)
    ]
    for before, after in itertools.pairwise(chunks):
        assert after.start_sample - before.end_sample > 3 * SAMPLE_RATE


def test_chunks_fill_up_to_the_limit_and_cut_in_a_pause() -> None:
    # Ten 5 s sentences with 0.6 s pauses: 56 s of talk.
    speech = [(0.6 + 5.6 * i, 5.6 * (i + 1)) for i in range(10)]
    plan = analysis(60, speech)

    chunks = chunks_from_analysis(plan, max_chunk_s=30.0)

    assert all(c.duration_s <= 30.0 for c in chunks)
    assert len(chunks) == 2
    # The cut lies in the pause between two sentences, not in a sentence.
    cut = chunks[0].end_s
    assert any(
        end <= cut and chunks[1].start_s <= start
        for (_, end), (start, _) in itertools.pairwise(speech)
    )


def test_speech_longer_than_the_limit_is_split_at_its_quietest_point() -> None:
    plan = analysis(80, [(1, 75)], quiet_at=(24.0, 50.0))

    chunks = chunks_from_analysis(plan, max_chunk_s=30.0)

    assert [round(c.end_s, 2) for c in chunks[:-1]] == [24.0, 50.0]
    assert [round(c.start_s, 2) for c in chunks[1:]] == [24.0, 50.0]
    assert chunks[0].start_sample == on_grid(1) - PAD
    assert chunks[-1].end_sample == on_grid(75) + PAD


def test_a_split_never_makes_a_piece_over_the_limit_or_a_tiny_one() -> None:
    # The quietest point overall is at 5 s, too early to be useful: the split looks only
    # between half and all of the limit, and finds the dip at 20 s.
    plan = analysis(70, [(0, 65)], quiet_at=(5.0, 20.0, 40.0))

    pieces = split_at_quietest(0, 65 * SAMPLE_RATE, plan.energy, 30 * SAMPLE_RATE)

    assert [round(end / SAMPLE_RATE, 2) for _, end in pieces] == [20.0, 40.0, 65.0]


def test_flat_speech_is_still_split_within_the_limit() -> None:
    energy = np.full(100 * SAMPLE_RATE // ENERGY_HOP, 0.01)

    pieces = split_at_quietest(0, 100 * SAMPLE_RATE, energy, 30 * SAMPLE_RATE)

    assert all(end - start <= 30 * SAMPLE_RATE for start, end in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == 100 * SAMPLE_RATE
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))


def test_padding_stays_inside_the_media() -> None:
    plan = analysis(5, [(0, 5)])

    [chunk] = chunks_from_analysis(plan)

    assert (chunk.start_sample, chunk.end_sample) == (0, 5 * SAMPLE_RATE)


def test_blips_shorter_than_min_speech_are_ignored() -> None:
    plan = analysis(10, [(2.0, 2.1)])

    assert chunks_from_analysis(plan) == []


def test_max_chunk_must_be_sensible() -> None:
    with pytest.raises(ValueError):
        chunks_from_analysis(analysis(5, [(1, 2)]), max_chunk_s=0.5)


def test_padding_is_speech_pad_each_side() -> None:
    [chunk] = chunks_from_analysis(analysis(10, [(2.0, 6.0)]))

    assert chunk.start_sample == on_grid(2.0) - PAD
    assert chunk.end_sample == on_grid(6.0) + PAD
