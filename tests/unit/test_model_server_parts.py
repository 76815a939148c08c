"""The model server's pure parts: settings, model resolution, audio bodies."""

from __future__ import annotations

import contextlib
import resource
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

from model_server.audio import (
    decode_media,
    decode_media_to_pcm,
    is_pcm,
    pcm_to_float32,
)
from model_server.errors import (
    AudioTooLong,
    EmptyAudio,
    ModelConfigError,
    UndecodableAudio,
    WorkDiskFull,
)
from model_server.model import (
    assemble_split_model,
    resolve_compute_type,
    resolve_device,
    resolve_model,
)
from model_server.settings import ModelServerSettings
from testkit.media import JFK, silent_flac


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL", "base")
    monkeypatch.setenv("MODEL_DEVICE", "cpu")
    monkeypatch.setenv("MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("BATCH_WAIT_MS", "25")
    settings = ModelServerSettings()
    assert (settings.model, settings.model_device) == ("base", "cpu")
    assert (settings.max_batch_size, settings.batch_wait_ms) == (4, 25.0)
    assert settings.max_queued_chunks == 64 and settings.model_compute_type == "default"


def test_every_setting_is_documented() -> None:
    for name, field in ModelServerSettings.model_fields.items():
        assert field.description, name


def test_default_compute_type_follows_the_device() -> None:
    assert resolve_compute_type("default", "cpu") == "int8"
    assert resolve_compute_type("default", "cuda") == "float16"
    assert resolve_compute_type("int8_float16", "cuda") == "int8_float16"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")


def test_tiny_en_comes_from_its_package(tmp_path: Path) -> None:
    name, path = resolve_model("tiny.en", tmp_path)
    assert name == "tiny.en" and (path / "model.bin").is_file()


def test_a_model_directory_is_used_as_is(tmp_path: Path) -> None:
    model_dir = tmp_path / "faster-whisper-medium"
    model_dir.mkdir()
    (model_dir / "model.bin").write_bytes(b"weights")
    (model_dir / "tokenizer.json").write_text("{}")
    assert resolve_model(str(model_dir), tmp_path / "cache") == ("faster-whisper-medium", model_dir)


@pytest.mark.parametrize("model", ["large-v3", "tiny", "/no/such/dir"])
def test_an_unknown_model_is_a_clear_error(model: str, tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="not a model we know"):
        resolve_model(model, tmp_path)


def test_a_directory_without_weights_or_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"without a model\.bin"):
        resolve_model(str(tmp_path), tmp_path)
    (tmp_path / "model.bin").write_bytes(b"weights")
    with pytest.raises(ModelConfigError, match=r"without a tokenizer\.json"):
        resolve_model(str(tmp_path), tmp_path)


def test_split_weights_are_joined_in_order_once(tmp_path: Path) -> None:
    part1, part2 = tmp_path / "p1", tmp_path / "p2"
    part1.mkdir()
    part2.mkdir()
    (part1 / "model.bin.part1").write_bytes(b"AAAA")
    (part1 / "config.json").write_text("{}")
    (part1 / "tokenizer.json").write_text("{}")
    (part2 / "model.bin.part2").write_bytes(b"BB")
    target = tmp_path / "cache" / "whisper-base"

    assert assemble_split_model([part1, part2], target) == target
    assert (target / "model.bin").read_bytes() == b"AAAABB"
    assert sorted(p.name for p in target.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
    ]
    assert [p.name for p in target.parent.iterdir()] == ["whisper-base"]  # no leftovers

    (part2 / "model.bin.part2").write_bytes(b"CHANGED")
    assemble_split_model([part1, part2], target)
    assert (target / "model.bin").read_bytes() == b"AAAABB"  # built once, then reused


def test_pcm_is_little_endian_int16_scaled_to_one() -> None:
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    audio = pcm_to_float32(samples.tobytes(), "audio/x-pcm-s16le")
    assert audio.dtype == np.float32
    assert audio.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]
    assert is_pcm("audio/x-pcm-s16le; rate=16000") and not is_pcm("audio/wav")


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"", "audio/x-pcm-s16le", EmptyAudio),
        (b"\x00\x00\x00", "audio/x-pcm-s16le", UndecodableAudio),
        (b"\x00\x00", "audio/x-pcm-s16le; rate=44100", UndecodableAudio),
        (b"\x00\x00", "audio/x-pcm-s16le; channels=2", UndecodableAudio),
    ],
)
def test_bad_pcm_is_refused(body: bytes, content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        pcm_to_float32(body, content_type)


@pytest.mark.parametrize(
    ("body", "error"), [(b"", EmptyAudio), (b"not audio" * 50, UndecodableAudio)]
)
def test_bad_media_is_refused(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_media(body, max_seconds=60)


# -- decoding within a limit: memory follows the limit, not the file ---------------------------


def test_media_decodes_as_faster_whisper_does() -> None:
    """16 kHz mono float32, through an s16 resampler: the samples faster-whisper's own
    decode_audio gives, for a 44.1 kHz stereo FLAC."""
    audio = decode_media(JFK.read_bytes(), max_seconds=60)
    assert audio.dtype == np.float32
    assert np.array_equal(audio, decode_audio(str(JFK)))


def test_a_file_read_from_a_stream_decodes_the_same(tmp_path: Path) -> None:
    with JFK.open("rb") as file:
        assert np.array_equal(decode_media(file, max_seconds=60), decode_audio(str(JFK)))


def test_a_declared_duration_over_the_limit_is_refused_before_decoding() -> None:
    """2 s of silence whose header claims 10 hours: refused by the claim (decoding would
    find 2 s, well within the limit)."""
    hostile = silent_flac(2, declare_seconds=10 * 3600)
    with pytest.raises(AudioTooLong) as caught:
        decode_media(hostile, max_seconds=60, limit_name="MAX_CHUNK_SECONDS")
    assert caught.value.detail == (
        "the file declares 36000.0 s of audio, over the 60 s limit (MAX_CHUNK_SECONDS)"
    )


def test_a_declared_duration_just_over_the_limit_is_left_to_the_decoder() -> None:
    """Headers round: a claim within a second of the limit is judged by the samples."""
    audio = decode_media(silent_flac(3, declare_seconds=3.5), max_seconds=3)
    assert audio.shape == (3 * 16_000,)


@pytest.mark.parametrize("declared", [0, 2], ids=["none", "less-than-it-holds"])
def test_decoding_stops_at_the_limit_whatever_the_file_declares(declared: float) -> None:
    """10 minutes of audio, the limit 10 s: refused, and the memory used is that of what
    the file declares (2 s, or nothing), not of 10 minutes (38 MB of float32)."""
    hostile = silent_flac(600, declare_seconds=declared)
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLong) as caught:
            decode_media(hostile, max_seconds=10, limit_name="MAX_CHUNK_SECONDS")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024**2
    assert caught.value.detail == (
        "the audio lasts more than 10 s, over the 10 s limit (MAX_CHUNK_SECONDS)"
    )


@pytest.mark.parametrize("declared", [0, 2], ids=["none", "less-than-it-holds"])
def test_a_file_within_the_limit_decodes_whole_whatever_it_declares(declared: float) -> None:
    audio = decode_media(silent_flac(30, declare_seconds=declared), max_seconds=60)
    assert audio.shape == (30 * 16_000,) and audio.dtype == np.float32
    assert not audio.any()


def test_a_segment_put_off_past_the_chunk_ends_at_the_audio() -> None:
    """Whisper closed a put-off sentence at 34.56 s of a 29.3 s chunk (seen on the long
    recording): the segment and its words end at 29.3 s, where the audio does."""
    from model_server.windows import clamp_to_audio

    segment = {
        "seek": 2456,
        "start": 24.56,
        "end": 34.56,
        "tokens": [1, 2],
        "words": [
            {"start": 24.6, "end": 27.0, "word": " all", "probability": 0.9},
            {"start": 28.9, "end": 31.2, "word": " done", "probability": 0.8},
        ],
    }
    clamped = clamp_to_audio(segment, 29.3)
    assert (clamped["start"], clamped["end"]) == (24.56, 29.3)
    assert [(w["start"], w["end"]) for w in clamped["words"]] == [(24.6, 27.0), (28.9, 29.3)]
    assert segment["end"] == 34.56  # the input is not changed
    inside = {"seek": 0, "start": 1.0, "end": 5.0, "tokens": [3]}
    assert clamp_to_audio(inside, 29.3) is inside
    beyond = {"seek": 0, "start": 30.0, "end": 31.0, "tokens": [4]}
    assert (clamp_to_audio(beyond, 29.3)["start"], clamp_to_audio(beyond, 29.3)["end"]) == (
        29.3,
        29.3,
    )


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """A full disk, for this process: writes past ``limit`` bytes fail with EFBIG (the
    kernel's RLIMIT_FSIZE, SIGXFSZ ignored), as writes to a full WORK_DIR fail with
    ENOSPC."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_work_dir_is_a_503_not_the_clients_fault(tmp_path: Path) -> None:
    """The upload is fine; the server has no room for its samples: 503 with Retry-After
    (the transcriber tries again later), not 422 (which tells the client its file is bad).
    The partial PCM file is removed."""
    dest = tmp_path / "upload.pcm"
    with JFK.open("rb") as media, file_size_limit(64 * 1024):
        with pytest.raises(WorkDiskFull) as refused:
            decode_media_to_pcm(media, dest, max_seconds=60)
    assert refused.value.status_code == 503 and "Retry-After" in refused.value.headers
    assert not dest.exists()
