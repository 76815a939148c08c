"""Speaker labels through the whole service (issue 18): enqueue → model → diarization →
signed webhook, on real PostgreSQL, with tiny.en and the real speaker model (the diarize
extra, which ``make install`` installs), on a conversation of three real voices of the
fixtures with known turns (``testkit.conversations``)."""

from __future__ import annotations

import os
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transcription_core.speakers import diarization_installed

if not diarization_installed():
    WHY = "the diarize extra is not installed: `make install-diarize` (`make test` does)"
    if os.environ.get("CI"):
        pytest.fail(WHY, pytrace=False)
    pytest.skip(WHY, allow_module_level=True)

from stack import run_job, running_stack
from testkit.conversations import Conversation, converse, voice_audio
from testkit.procs import model_server

pytestmark = [pytest.mark.model, pytest.mark.slow]

DIARIZING = {"diarization": True}


@pytest.fixture(scope="module")
def tiny_url() -> Iterator[str]:
    with model_server(MODEL="tiny.en", MAX_BATCH_SIZE="4") as server:
        yield server.url


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Conversation]:
    """JFK, the left voice of stereo_diarization.wav and the speaker of hotwords.mp3 in
    turn (about 25 s), as a WAV file."""
    voices = [(name, voice_audio(name)) for name in ("jfk", "left", "hotwords")]
    talk = converse("3 voices", voices)
    folder = tmp_path_factory.mktemp("media")
    pcm = (np.clip(talk.audio, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2")
    with wave.open(str(folder / "talk.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm.tobytes())
    return folder, talk


def who_said(talk: Conversation, start: float, end: float) -> str:
    """The reference speaker of a span: the turn that overlaps it most, else the nearest."""

    def score(turn: Any) -> tuple[float, float]:
        overlap = min(end, turn.end) - max(start, turn.start)
        distance = max(turn.start - end, start - turn.end, 0.0)
        return (overlap, -distance)

    return str(max(talk.turns, key=score).speaker)


async def test_words_and_segments_carry_speakers_numbered_in_order_of_first_speech(
    pg_url: str, tiny_url: str, conversation: tuple[Path, Conversation]
) -> None:
    folder, talk = conversation
    async with running_stack(
        pg_url, tiny_url, media_root=folder, enqueue=DIARIZING, transcriber=DIARIZING
    ) as stack:
        done, data = await run_job(stack, "talk.wav", diarize=True, word_timestamps=True)
        two, _ = await run_job(stack, "talk.wav", diarize=True, speakers=2)
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        vtt = await stack.api.get(f"/v1/jobs/{done['id']}/transcript?format=vtt", headers=headers)
        text = await stack.api.get(f"/v1/jobs/{done['id']}/transcript?format=text", headers=headers)
    transcript = done["transcript"]
    assert data["transcript"] == transcript
    segments = transcript["segments"]
    # Numbered in order of first speech: each new speaker is the next number.
    seen: list[int] = []
    for segment in segments:
        if segment["speaker"] not in seen:
            assert segment["speaker"] == len(seen), [s["speaker"] for s in segments]
            seen.append(segment["speaker"])
    assert seen == [0, 1, 2]
    # Each word carries its segment's speaker, and that speaker is who said it.
    agree = total = 0
    mapping: dict[int, str] = {}
    for segment in segments:
        for word in segment["words"]:
            assert word["speaker"] == segment["speaker"]
            truth = who_said(talk, word["start"], word["end"])
            mapping.setdefault(word["speaker"], truth)
            agree += mapping[word["speaker"]] == truth
            total += 1
    assert sorted(mapping.values()) == ["hotwords", "jfk", "left"], mapping
    assert agree / total >= 0.9, (agree, total)
    # The exact count is honoured.
    assert {s["speaker"] for s in two["transcript"]["segments"]} == {0, 1}
    # The captions and the text name them.
    assert vtt.status_code == 200 and "<v Speaker 2>" in vtt.text, vtt.text
    assert text.text.startswith("Speaker 0: ") and "\n\nSpeaker 1: " in text.text


async def test_a_job_without_diarize_has_no_speakers(pg_url: str, tiny_url: str) -> None:
    async with running_stack(pg_url, tiny_url, enqueue=DIARIZING, transcriber=DIARIZING) as stack:
        done, _ = await run_job(stack, "jfk.flac", word_timestamps=True)
    for segment in done["transcript"]["segments"]:
        assert "speaker" not in segment
        assert all("speaker" not in word for word in segment["words"])
