"""decode_to_pcm_file on real files of every container the worker accepts, and broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testkit.media import (
    JFK,
    JFK_SECONDS,
    KINDS,
    MULTILINGUAL,
    MULTILINGUAL_SECONDS,
    decode_mono,
    envelope_similarity,
    make_media,
    make_silence_wav,
    make_text_file,
    make_truncated,
    make_video_without_audio,
)
from transcriber_service.errors import JobFailure, MediaError
from transcriber_service.media import decode_to_pcm_file
from transcription_core.audio.pcm import SAMPLE_RATE, pcm_num_samples, read_pcm, read_pcm_float32
from transcription_core.status import FailureReason


@pytest.fixture(scope="module")
def jfk_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """jfk.flac re-encoded as each kind of file (11 s each, quick to make)."""
    folder = tmp_path_factory.mktemp("jfk")
    return {kind: make_media(kind, folder, JFK) for kind in KINDS}


@pytest.fixture(scope="module")
def jfk_reference() -> np.ndarray:
    return decode_mono(JFK)


def decode(src: Path, tmp_path: Path, max_duration_s: float = 3600.0):
    return decode_to_pcm_file(src, tmp_path / "audio.pcm", max_duration_s=max_duration_s)


def assert_fails(src: Path, tmp_path: Path, reason: FailureReason, **kwargs: float) -> JobFailure:
    with pytest.raises(MediaError) as caught:
        decode(src, tmp_path, **kwargs)
    assert caught.value.reason is reason
    assert not (tmp_path / "audio.pcm").exists(), "a failed decode leaves no PCM file behind"
    return caught.value


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_container_decodes_to_16k_mono_speech(
    kind: str, jfk_files: dict[str, Path], jfk_reference: np.ndarray, tmp_path: Path
) -> None:
    decoded = decode(jfk_files[kind], tmp_path)

    assert decoded.sample_rate == SAMPLE_RATE
    assert decoded.duration_s == pytest.approx(JFK_SECONDS, abs=0.05)
    assert decoded.num_samples == pcm_num_samples(decoded.path)
    assert decoded.path.stat().st_size == 2 * decoded.num_samples  # mono s16, no header
    assert decoded.decode_errors == 0
    assert not decoded.truncated
    # It is Kennedy's speech, not noise or another recording.
    audio = read_pcm_float32(decoded.path, 0, decoded.num_samples)
    assert envelope_similarity(jfk_reference, audio) > 0.98


def test_video_with_audio_decodes_the_audio_track(tmp_path: Path) -> None:
    video = make_media("mp4", tmp_path, MULTILINGUAL)

    decoded = decode(video, tmp_path)

    assert decoded.codec == "aac"
    assert "mp4" in decoded.container_format
    assert decoded.source_channels == 2
    assert decoded.duration_s == pytest.approx(MULTILINGUAL_SECONDS, abs=0.05)
    reference = decode_mono(MULTILINGUAL)
    audio = read_pcm_float32(decoded.path, 0, decoded.num_samples)
    assert envelope_similarity(reference, audio) > 0.98


def test_source_description(jfk_files: dict[str, Path], tmp_path: Path) -> None:
    decoded = decode(jfk_files["webm"], tmp_path)

    assert decoded.codec == "opus"
    assert "webm" in decoded.container_format
    assert decoded.source_sample_rate == 48_000
    assert decoded.declared_duration_s == pytest.approx(JFK_SECONDS, abs=0.05)
    assert decoded.start_offset_s == 0.0


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    decoded = decode(JFK, tmp_path)  # 44.1 kHz stereo FLAC

    assert decoded.source_channels == 2
    assert decoded.source_sample_rate == 44_100
    assert decoded.num_samples == round(JFK_SECONDS * SAMPLE_RATE)


def test_video_without_audio_is_no_audio_found(tmp_path: Path) -> None:
    failure = assert_fails(
        make_video_without_audio(tmp_path / "silent-film.mp4"),
        tmp_path,
        FailureReason.NO_AUDIO_FOUND,
    )
    assert "no audio stream" in failure.detail


def test_text_file_named_mp3_is_undecodable(tmp_path: Path) -> None:
    failure = assert_fails(
        make_text_file(tmp_path / "song.mp3"), tmp_path, FailureReason.MEDIA_UNDECODABLE
    )
    assert "not a media file" in failure.detail
    assert not failure.retried


def test_empty_file_is_undecodable(tmp_path: Path) -> None:
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    assert_fails(empty, tmp_path, FailureReason.MEDIA_UNDECODABLE)


def test_random_bytes_are_undecodable(tmp_path: Path) -> None:
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(7).bytes(200_000))
    assert_fails(noise, tmp_path, FailureReason.MEDIA_UNDECODABLE)


def test_truncated_mp3_keeps_the_prefix(tmp_path: Path) -> None:
    """Policy: a file cut off midway is transcribed as far as it plays."""
    cut = make_truncated(MULTILINGUAL, tmp_path / "cut.mp3", fraction=0.5)

    decoded = decode(cut, tmp_path)

    assert decoded.duration_s == pytest.approx(MULTILINGUAL_SECONDS / 2, abs=1.0)
    assert decoded.truncated
    assert decoded.declared_duration_s == pytest.approx(MULTILINGUAL_SECONDS, abs=0.1)


def test_truncated_m4a_without_its_index_is_undecodable(
    jfk_files: dict[str, Path], tmp_path: Path
) -> None:
    # The MP4 muxer writes the index (moov) last, so the first half has no index.
    cut = make_truncated(jfk_files["m4a"], tmp_path / "cut.m4a", fraction=0.5)
    assert_fails(cut, tmp_path, FailureReason.MEDIA_UNDECODABLE)


def test_over_the_declared_duration_is_refused_up_front(tmp_path: Path) -> None:
    failure = assert_fails(
        make_silence_wav(tmp_path / "minute.wav", seconds=60),
        tmp_path,
        FailureReason.MEDIA_TOO_LARGE,
        max_duration_s=30,
    )
    assert "60 s" in failure.detail and "30 s" in failure.detail


def test_over_the_duration_while_decoding_is_too_large(
    jfk_files: dict[str, Path], tmp_path: Path
) -> None:
    # 10.5 s passes the up-front check on the 11 s the container declares (1 s of slack
    # for headers that round); the samples counted while decoding catch it.
    failure = assert_fails(
        jfk_files["ogg"], tmp_path, FailureReason.MEDIA_TOO_LARGE, max_duration_s=10.5
    )
    assert "10.5 s" in failure.detail


def test_exactly_the_limit_is_accepted(jfk_files: dict[str, Path], tmp_path: Path) -> None:
    assert decode(jfk_files["wav"], tmp_path, max_duration_s=JFK_SECONDS).duration_s == 11.0


def test_digital_silence_decodes(tmp_path: Path) -> None:
    """Silence is audio; whether it holds speech is the chunker's question."""
    decoded = decode(make_silence_wav(tmp_path / "silence.wav", seconds=60), tmp_path)

    assert decoded.num_samples == 60 * SAMPLE_RATE
    assert not read_pcm(decoded.path, 0, decoded.num_samples).strip(b"\0")


def test_missing_source_is_a_bug_not_a_failure(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode(tmp_path / "nowhere.mp3", tmp_path)


def test_read_pcm_spans(jfk_files: dict[str, Path], tmp_path: Path) -> None:
    decoded = decode(jfk_files["flac"], tmp_path)
    everything = read_pcm(decoded.path, 0, decoded.num_samples)

    assert read_pcm(decoded.path, 1000, 1010) == everything[2000:2020]
    floats = read_pcm_float32(decoded.path, 1000, 1010)
    assert floats.dtype == np.float32
    expected = np.frombuffer(everything[2000:2020], dtype="<i2") / 32768.0
    np.testing.assert_allclose(floats, expected.astype(np.float32))
    # Clipped to the file, never past it.
    assert len(read_pcm(decoded.path, decoded.num_samples - 5, decoded.num_samples + 100)) == 10
    assert read_pcm(decoded.path, 5, 5) == b""
    with pytest.raises(ValueError):
        read_pcm(decoded.path, 10, 5)


def test_audio_that_starts_late_keeps_the_media_timeline(tmp_path: Path) -> None:
    """Sample i is at i / 16000 s of the media: a late audio track gets silence first."""
    late = make_media("mp4", tmp_path, JFK, audio_start_s=2.0, name="late")

    decoded = decode(late, tmp_path)

    assert decoded.start_offset_s == pytest.approx(2.0, abs=0.05)
    assert decoded.duration_s == pytest.approx(2.0 + JFK_SECONDS, abs=0.1)
    lead = read_pcm(decoded.path, 0, int(1.9 * SAMPLE_RATE))
    assert not lead.strip(b"\0")


def test_a_playlist_is_not_followed(tmp_path: Path) -> None:
    """An HLS playlist would make FFmpeg open the files or URLs it lists: refused."""
    playlist = tmp_path / "media.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:60.0,\n{MULTILINGUAL}\n#EXT-X-ENDLIST\n"
    )
    assert_fails(playlist, tmp_path, FailureReason.MEDIA_UNDECODABLE)


def test_one_channel_is_decoded_alone(tmp_path: Path) -> None:
    """stereo_diarization.wav: the left sentence lasts 5 s, the right one ends near 2.5 s."""
    from testkit.data import DATA

    src = DATA / "stereo_diarization.wav"
    levels = []
    for channel in (0, 1):
        decoded = decode_to_pcm_file(
            src, tmp_path / f"{channel}.pcm", max_duration_s=60, channel=channel
        )
        assert decoded.source_channels == 2 and decoded.num_samples == 5 * SAMPLE_RATE
        audio = read_pcm_float32(decoded.path, 0, decoded.num_samples)
        levels.append(float(np.abs(audio[3 * SAMPLE_RATE :]).mean()))
    left, right = levels
    assert left > 50 * right  # the last 2 s: the left speaks, the right is silent
    with pytest.raises(ValueError, match="no channel 2"):
        decode_to_pcm_file(src, tmp_path / "2.pcm", max_duration_s=60, channel=2)
