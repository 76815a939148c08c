"""Chunking real speech at pauses: bounds, cut points in quiet, determinism, long files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from testkit.media import JFK, MULTILINGUAL, decode_mono, make_silence_wav
from transcriber_service.media import decode_to_pcm_file
from transcription_core.audio.chunking import (
    DEFAULT_VAD_OPTIONS,
    ENERGY_HOP,
    Chunk,
    analyse_audio,
    analyse_pcm,
    plan_chunks,
    speech_regions,
)
from transcription_core.audio.pcm import SAMPLE_RATE, read_pcm_float32

MAX_CHUNK_S = 30.0


def write_pcm(path: Path, audio: np.ndarray) -> Path:
    np.clip(audio * 32768.0, -32768, 32767).astype("<i2").tofile(path)
    return path


@pytest.fixture(scope="module")
def multilingual_pcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("multilingual")
    return decode_to_pcm_file(MULTILINGUAL, folder / "ml.pcm", max_duration_s=3600).path


@pytest.fixture(scope="module")
def long_pcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """multilingual.mp3 ten times over: 10 minutes, speech running across the seams."""
    folder = tmp_path_factory.mktemp("long")
    return write_pcm(folder / "long.pcm", np.tile(decode_mono(MULTILINGUAL), 10))


@pytest.fixture(scope="module")
def three_jfks_pcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jfk.flac three times with 4 s of silence between: pauses longer than a sentence's."""
    folder = tmp_path_factory.mktemp("jfks")
    jfk = decode_mono(JFK)
    gap = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
    return write_pcm(folder / "jfks.pcm", np.concatenate([jfk, gap, jfk, gap, jfk]))


def energy_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(audio.astype(np.float64) ** 2) + 1e-12))


def speech_level_db(audio: np.ndarray) -> float:
    """The median loudness of the 10 ms hops that are not silence."""
    hops = audio[: len(audio) // ENERGY_HOP * ENERGY_HOP].reshape(-1, ENERGY_HOP)
    levels = 10 * np.log10(np.mean(hops.astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(np.median(levels[levels > -70]))


def assert_well_formed(chunks: list[Chunk], num_samples: int) -> None:
    assert chunks, "speech gives at least one chunk"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 <= chunk.start_sample < chunk.end_sample <= num_samples
        assert chunk.duration_s <= MAX_CHUNK_S
    for before, after in itertools.pairwise(chunks):
        assert before.end_sample <= after.start_sample, "chunks are in order, never overlap"


def assert_packed(chunks: list[Chunk], max_chunk_s: float = MAX_CHUNK_S) -> None:
    """No two neighbouring chunks would fit in one: a chunk closes only when it is full."""
    for before, after in itertools.pairwise(chunks):
        assert after.end_sample - before.start_sample > max_chunk_s * SAMPLE_RATE


def assert_cuts_in_quiet(chunks: list[Chunk], audio: np.ndarray) -> None:
    """Each cut point sits in a pause: the 100 ms around it far below speech loudness."""
    speech = speech_level_db(audio)
    half = SAMPLE_RATE // 20
    for chunk in chunks:
        for cut in (chunk.start_sample, chunk.end_sample):
            around = audio[max(0, cut - half) : cut + half]
            if len(around) < half or cut in (0, len(audio)):
                continue  # the media's own start or end
            assert energy_db(around) < speech - 20, f"cut at {cut / SAMPLE_RATE:.2f} s is loud"


def assert_speech_kept(chunks: list[Chunk], audio: np.ndarray) -> None:
    """Dropping silence drops no speech: every loud 10 ms hop is inside a chunk."""
    hops = audio[: len(audio) // ENERGY_HOP * ENERGY_HOP].reshape(-1, ENERGY_HOP)
    levels = 10 * np.log10(np.mean(hops.astype(np.float64) ** 2, axis=1) + 1e-12)
    covered = np.zeros(len(levels), dtype=bool)
    for chunk in chunks:
        covered[chunk.start_sample // ENERGY_HOP : -(-chunk.end_sample // ENERGY_HOP)] = True
    loud = levels > speech_level_db(audio) - 10
    assert covered[loud].all(), f"{int((loud & ~covered).sum())} loud hops left out"


def test_multilingual_is_cut_at_pauses(multilingual_pcm: Path) -> None:
    chunks = plan_chunks(multilingual_pcm, max_chunk_s=MAX_CHUNK_S)
    audio = read_pcm_float32(multilingual_pcm, 0, multilingual_pcm.stat().st_size // 2)

    assert_well_formed(chunks, len(audio))
    assert len(chunks) >= 2  # 60 s of speech cannot fit one chunk
    assert_packed(chunks)
    assert_cuts_in_quiet(chunks, audio)
    assert_speech_kept(chunks, audio)
    # The 1.5 s pause near 30 s is not sent to the model.
    assert sum(c.num_samples for c in chunks) < len(audio)


def test_long_pauses_are_packed_inside_a_chunk_that_has_room(three_jfks_pcm: Path) -> None:
    chunks = plan_chunks(three_jfks_pcm)
    audio = read_pcm_float32(three_jfks_pcm, 0, three_jfks_pcm.stat().st_size // 2)
    jfk, gap = len(decode_mono(JFK)), 4 * SAMPLE_RATE

    assert_well_formed(chunks, len(audio))
    assert_packed(chunks)
    # Two JFKs and the 4 s pause between them fit one 30 s window; the third does not.
    assert len(chunks) == 2
    assert chunks[0].start_sample < SAMPLE_RATE // 2 and chunks[0].end_sample > jfk + gap
    # The cut is in the second pause (JFK speaks from 0.3 s to 10.5 s of its 11 s).
    assert chunks[0].end_sample >= jfk + gap + int(10.4 * SAMPLE_RATE)
    assert chunks[1].start_sample <= 2 * (jfk + gap) + int(0.3 * SAMPLE_RATE)


def test_chunking_is_deterministic_and_window_independent(multilingual_pcm: Path) -> None:
    first = plan_chunks(multilingual_pcm)

    assert plan_chunks(multilingual_pcm) == first
    # Speech regions that cross the edges of the analysis windows come out the same.
    assert plan_chunks(multilingual_pcm, window_s=7.0) == first
    assert plan_chunks(multilingual_pcm, window_s=0.5) == first


def test_samples_in_memory_are_chunked_as_their_pcm_file(multilingual_pcm: Path) -> None:
    """The model server's OpenAI endpoint chunks an upload's samples with the worker's
    chunker: the same analysis, the same chunks."""
    from_file = analyse_pcm(multilingual_pcm)
    audio = read_pcm_float32(multilingual_pcm, 0, from_file.num_samples)
    in_memory = analyse_audio(audio, window_s=7.0)

    assert in_memory.num_samples == from_file.num_samples
    np.testing.assert_array_equal(in_memory.speech_probs, from_file.speech_probs)
    np.testing.assert_array_equal(in_memory.energy, from_file.energy)
    assert plan_chunks(audio, max_chunk_s=10.0) == plan_chunks(multilingual_pcm, max_chunk_s=10.0)


def test_windowed_vad_equals_one_pass_over_the_whole_file(multilingual_pcm: Path) -> None:
    analysis = analyse_pcm(multilingual_pcm, window_s=10.0)
    audio = read_pcm_float32(multilingual_pcm, 0, analysis.num_samples)

    whole = get_vad_model()(np.pad(audio, (0, -len(audio) % 512))).ravel()

    # All but the final frame (faster-whisper zeroes part of the last frame's context).
    np.testing.assert_array_equal(analysis.speech_probs[:-1], whole[:-1])


def test_speech_regions_follow_faster_whisper(multilingual_pcm: Path) -> None:
    analysis = analyse_pcm(multilingual_pcm)
    audio = read_pcm_float32(multilingual_pcm, 0, analysis.num_samples)
    options = VadOptions(min_speech_duration_ms=150, min_silence_duration_ms=300, speech_pad_ms=200)

    ours = speech_regions(analysis.speech_probs, analysis.num_samples, options)
    theirs = get_speech_timestamps(audio, options)

    assert ours == [(r["start"], r["end"]) for r in theirs]


def test_short_speech_is_one_chunk(tmp_path: Path) -> None:
    pcm = decode_to_pcm_file(JFK, tmp_path / "jfk.pcm", max_duration_s=60).path

    [chunk] = plan_chunks(pcm)

    # Speech from about 0.3 s to 10.5 s, padded; the silence after it is left out.
    assert 0.0 <= chunk.start_s < 0.5
    assert 10.3 < chunk.end_s <= 11.0
    assert chunk.start_s == chunk.start_sample / SAMPLE_RATE


def test_ten_minutes_chunk_within_bounds_at_quiet_points(long_pcm: Path) -> None:
    chunks = plan_chunks(long_pcm)
    audio = read_pcm_float32(long_pcm, 0, long_pcm.stat().st_size // 2)

    assert_well_formed(chunks, len(audio))
    assert 20 <= len(chunks) <= 40
    assert_packed(chunks)
    assert_cuts_in_quiet(chunks, audio)
    assert_speech_kept(chunks, audio)
    assert plan_chunks(long_pcm, window_s=45.0) == chunks


def test_shorter_chunks_on_request(multilingual_pcm: Path) -> None:
    chunks = plan_chunks(multilingual_pcm, max_chunk_s=10.0)
    audio = read_pcm_float32(multilingual_pcm, 0, multilingual_pcm.stat().st_size // 2)

    assert all(c.duration_s <= 10.0 for c in chunks)
    assert len(chunks) >= 6
    assert_packed(chunks, 10.0)
    assert_speech_kept(chunks, audio)


def test_digital_silence_has_no_speech(tmp_path: Path) -> None:
    wav = make_silence_wav(tmp_path / "silence.wav", seconds=60)
    pcm = decode_to_pcm_file(wav, tmp_path / "silence.pcm", max_duration_s=120).path

    assert plan_chunks(pcm) == []


def test_quiet_noise_has_no_speech(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).normal(scale=0.003, size=20 * SAMPLE_RATE)
    pcm = write_pcm(tmp_path / "hiss.pcm", noise.astype(np.float32))

    assert plan_chunks(pcm) == []


def test_empty_audio_has_no_speech(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcm"
    empty.write_bytes(b"")

    assert plan_chunks(empty) == []
    assert plan_chunks(np.zeros(0, dtype=np.float32)) == []


def test_chunk_times() -> None:
    chunk = Chunk(index=3, start_sample=16_000, end_sample=40_000)

    assert (chunk.start_s, chunk.end_s, chunk.duration_s) == (1.0, 2.5, 1.5)
    assert chunk.num_samples == 24_000


def test_default_options_are_faster_whispers_with_shorter_pauses() -> None:
    assert DEFAULT_VAD_OPTIONS.threshold == VadOptions().threshold
    assert DEFAULT_VAD_OPTIONS.min_silence_duration_ms < VadOptions().min_silence_duration_ms
