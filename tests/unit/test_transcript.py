"""The one transcript type: its rendering, its stored shape, the /v1/predict wire schema
that maps to it, and the worker's assembly of chunks into a job's transcript."""

from __future__ import annotations

import pytest

from transcriber_service.pipeline import assemble
from transcription_core.audio.chunking import Chunk
from transcription_core.predict import PredictResponse
from transcription_core.transcript import (
    Decoding,
    Segment,
    Transcript,
    Word,
    timestamp,
)

SEGMENTS = [
    Segment(0.0, 8.0, " And so my fellow Americans,"),
    Segment(8.0, 3725.5, " ask not."),
]
TRANSCRIPT = Transcript(SEGMENTS, "en", 0.98, 3725.5, "tiny.en")


def test_timestamps() -> None:
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3725.5, ".") == "01:02:05.500"
    assert timestamp(59.9996, ",") == "00:01:00,000"


def test_text_srt_and_vtt() -> None:
    assert TRANSCRIPT.text == "And so my fellow Americans, ask not."
    assert TRANSCRIPT.render("text") == TRANSCRIPT.text
    assert TRANSCRIPT.render("srt") == (
        "1\n00:00:00,000 --> 00:00:08,000\nAnd so my fellow Americans,\n\n"
        "2\n00:00:08,000 --> 01:02:05,500\nask not.\n"
    )
    assert TRANSCRIPT.render("vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:08.000\nAnd so my fellow Americans,\n\n"
        "00:00:08.000 --> 01:02:05.500\nask not.\n"
    )
    with pytest.raises(ValueError, match="unknown transcript format"):
        TRANSCRIPT.render("docx")


def test_the_stored_shape_is_the_contracts_and_reads_back() -> None:
    stored = TRANSCRIPT.to_json()
    assert stored == {
        "text": "And so my fellow Americans, ask not.",
        "language": "en",
        "language_probability": 0.98,
        "duration": 3725.5,
        "model": "tiny.en",
        "segments": [
            {"id": 0, "start": 0.0, "end": 8.0, "text": " And so my fellow Americans,"},
            {"id": 1, "start": 8.0, "end": 3725.5, "text": " ask not."},
        ],
    }
    assert Transcript.from_json(stored) == TRANSCRIPT


def test_words_and_a_speaker_are_kept_when_a_segment_has_them() -> None:
    segment = Segment(1.0, 2.0, " Hi.", words=[Word(1.0, 1.5, " Hi.", 0.9, speaker=1)], speaker=1)
    assert segment.to_json() == {
        "start": 1.0,
        "end": 2.0,
        "text": " Hi.",
        "words": [{"start": 1.0, "end": 1.5, "word": " Hi.", "probability": 0.9, "speaker": 1}],
        "speaker": 1,
    }
    assert Segment.from_json(segment.to_json()) == segment


def test_a_shifted_segment_moves_its_words_and_its_seek() -> None:
    segment = Segment(
        1.0,
        2.0,
        " Hi.",
        words=[Word(1.0, 1.5, " Hi.", 0.9)],
        decoding=Decoding(seek=0, tokens=[1], temperature=0.0, compression_ratio=1.0),
    )
    moved = segment.shifted(30.0)
    assert (moved.start, moved.end) == (31.0, 32.0)
    assert moved.words == [Word(31.0, 31.5, " Hi.", 0.9)]
    assert moved.decoding is not None and moved.decoding.seek == 3000


def test_the_predict_answer_is_written_and_read_with_one_schema() -> None:
    chunk = Transcript(
        [Segment(0.12345, 1.5, " Hello.", avg_logprob=-0.312345, no_speech_prob=0.0612345)],
        "en",
        0.987654,
        1.5,
    )
    wire = PredictResponse.from_transcript(chunk, "tiny.en").model_dump_json()
    read = PredictResponse.model_validate_json(wire).to_transcript()
    assert read.model == "tiny.en" and read.text == "Hello."
    assert read.segments == [Segment(0.123, 1.5, " Hello.", None, -0.3123, 0.0612)]
    assert read.language_probability == 0.9877


def test_chunks_are_assembled_on_the_medias_timeline() -> None:
    chunks = [Chunk(0, 0, 16_000 * 10), Chunk(1, 16_000 * 12, 16_000 * 20)]
    saved = {
        0: {
            "detected": True,
            "language": "en",
            "language_probability": 0.91234,
            "model": "tiny.en",
            "segments": [{"start": 0.5, "end": 4.0, "text": " First."}],
        },
        1: {
            "detected": False,
            "language": "en",
            "language_probability": 1.0,
            "model": "tiny.en",
            "segments": [
                {"start": 0.0, "end": 9.0, "text": " Past its end."},
                {"start": 9.0, "end": 9.5, "text": "  "},
            ],
        },
    }
    assert assemble(saved, chunks, 20.0004, None).to_json() == {
        "text": "First. Past its end.",
        "language": "en",
        "language_probability": 0.9123,
        "duration": 20.0,
        "model": "tiny.en",
        "segments": [
            {"id": 0, "start": 0.5, "end": 4.0, "text": "First."},
            {"id": 1, "start": 12.0, "end": 20.0, "text": "Past its end."},
        ],
    }
