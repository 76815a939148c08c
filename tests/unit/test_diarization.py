"""The transcriber's speaker model (the diarize extra): its spectrogram is Resemblyzer's,
its clustering honours the speaker-count hint and drops specks, and windows become turns."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from transcription_core.speakers import diarization_installed

if not diarization_installed():
    WHY = "the diarize extra is not installed: `make install-diarize` (`make test` does)"
    if os.environ.get("CI"):
        pytest.fail(WHY, pytrace=False)
    pytest.skip(WHY, allow_module_level=True)

from transcriber_service.diarization import cluster, mel_frames, turns_from_windows
from transcription_core.speakers import SpeakerHint, SpeakerTurn


@pytest.mark.parametrize("length", [300, 12_345, 16_000])
def test_the_spectrogram_is_librosas_as_resemblyzer_takes_it(length: int) -> None:
    librosa = pytest.importorskip("librosa")
    samples = np.random.default_rng(0).standard_normal(length).astype(np.float32) * 0.1
    with pytest.warns(UserWarning) if length < 400 else contextlib.nullcontext():
        expected = librosa.feature.melspectrogram(
            y=samples, sr=16_000, n_fft=400, hop_length=160, n_mels=40
        ).T
    ours = mel_frames(samples)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    assert np.max(np.abs(ours - expected)) <= 1e-5 * np.max(expected)


def voices(sizes: list[int], seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``len(sizes)`` far-apart centres, ``sizes[k]`` of voice k."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), 256))
    points, truth = [], []
    for k, size in enumerate(sizes):
        points.append(centres[k] + 0.15 * rng.standard_normal((size, 256)))
        truth += [k] * size
    x = np.concatenate(points)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(truth)


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


def test_distinct_voices_are_found_without_a_count() -> None:
    x, truth = voices([30, 20, 10])
    assert same_partition(cluster(x, SpeakerHint(), 16), truth)


def test_a_speck_of_two_windows_is_no_speaker() -> None:
    x, truth = voices([30, 20, 2])
    labels = cluster(x, SpeakerHint(), 16)
    assert len(set(labels.tolist())) == 2
    assert same_partition(labels[:50], truth[:50])


@pytest.mark.parametrize(
    ("hint", "ceiling", "count"),
    [
        (SpeakerHint(exact=2), 16, 2),
        (SpeakerHint(maximum=2), 16, 2),
        (SpeakerHint(), 2, 2),
        (SpeakerHint(exact=1), 16, 1),
        (SpeakerHint(minimum=4), 16, 4),
    ],
)
def test_the_count_hint_and_the_ceiling_bound_the_speakers(
    hint: SpeakerHint, ceiling: int, count: int
) -> None:
    x, _ = voices([30, 20, 10])
    assert len(set(cluster(x, hint, ceiling).tolist())) == count


def test_windows_become_turns_cut_between_their_centres() -> None:
    regions = [(0, 48_000), (64_000, 72_000), (80_000, 81_600)]  # 0-3 s, 4-4.5 s, 5-5.1 s
    windows = [(0, 0.8), (0, 1.2), (0, 2.2), (1, 4.25)]
    labels = np.array([5, 5, 9, 9])
    assert turns_from_windows(regions, windows, labels) == [
        SpeakerTurn(0.0, 1.7, 5),
        SpeakerTurn(1.7, 3.0, 9),
        SpeakerTurn(4.0, 4.5, 9),
        SpeakerTurn(5.0, 5.1, 9),  # too short for a window: the nearest one's speaker
    ]


def test_a_long_region_is_read_in_pieces_of_at_most_a_minute() -> None:
    from transcriber_service.diarization import PIECE_S, _pieces

    piece = int(PIECE_S * 16_000)
    assert _pieces([(0, 100)]) == [(0, 100)]
    hour = 3600 * 16_000
    cut = _pieces([(5, 5 + hour)])
    assert cut[0] == (5, 5 + piece) and cut[-1][1] == 5 + hour
    assert all(b - a < 2 * piece for a, b in cut)
    assert all(cut[i][1] == cut[i + 1][0] for i in range(len(cut) - 1))
