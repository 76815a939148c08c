"""Speaker labels from a diarization's turns: who said each word and segment, numbered in
order of first speech; and how they show in the text and the captions."""

from __future__ import annotations

import pytest

from transcription_core.captions import caption_cues, render_captions
from transcription_core.speakers import SpeakerHint, SpeakerTurn, label_segments, speaker_at
from transcription_core.transcript import Segment, Transcript, Word

TURNS = [
    SpeakerTurn(0.0, 4.0, speaker=7),
    SpeakerTurn(4.5, 6.0, speaker=3),
    SpeakerTurn(7.0, 9.0, speaker=7),
]


def test_the_speaker_who_covers_most_of_a_span_has_it() -> None:
    assert speaker_at(TURNS, 3.0, 5.5) == 3  # 1.0 s of 3 against 1.0 s of 7: ties to the lower
    assert speaker_at(TURNS, 3.5, 5.5) == 3
    assert speaker_at(TURNS, 1.0, 4.6) == 7


def test_speech_no_turn_covers_goes_to_the_nearest_turn() -> None:
    assert speaker_at(TURNS, 6.2, 6.4) == 3
    assert speaker_at(TURNS, 6.7, 6.9) == 7
    assert speaker_at(TURNS, 12.0, 13.0) == 7
    assert speaker_at([], 1.0, 2.0) is None


def test_speakers_are_numbered_in_order_of_first_speech() -> None:
    segments = [Segment(0.5, 3.5, " a"), Segment(4.6, 5.9, " b"), Segment(7.1, 8.0, " c")]
    labelled = label_segments(segments, TURNS)
    assert [s.speaker for s in labelled] == [0, 1, 0]
    late = label_segments(segments[1:], TURNS)  # speaker 3 speaks first here
    assert [s.speaker for s in late] == [0, 1]


def test_a_segment_is_split_where_its_words_change_speaker() -> None:
    words = [
        Word(3.0, 3.5, " ask", 0.9),
        Word(3.5, 3.9, " not.", 0.9),
        Word(4.6, 5.0, " What", 0.9),
        Word(5.0, 5.8, " now?", 0.9),
    ]
    segment = Segment(3.0, 5.8, " ask not. What now?", words=words)
    first, second = label_segments([segment], TURNS)
    assert (first.start, first.end, first.text, first.speaker) == (3.0, 3.9, "ask not.", 0)
    assert (second.start, second.end, second.text, second.speaker) == (4.6, 5.8, "What now?", 1)
    assert [w.speaker for w in first.words or []] == [0, 0]
    assert [w.speaker for w in second.words or []] == [1, 1]
    assert second.to_json()["words"][0] == {
        "start": 4.6,
        "end": 5.0,
        "word": " What",
        "probability": 0.9,
        "speaker": 1,
    }


def test_a_segment_of_one_speaker_keeps_its_text_and_times() -> None:
    words = [Word(0.5, 1.0, " And", 0.9), Word(1.0, 2.0, " so", 0.9)]
    segment = Segment(0.4, 2.1, " And so", words=words)
    (labelled,) = label_segments([segment], TURNS)
    assert (labelled.start, labelled.end, labelled.text, labelled.speaker) == (
        0.4,
        2.1,
        " And so",
        0,
    )


@pytest.mark.parametrize(
    ("hint", "bounds"),
    [
        (SpeakerHint(), (1, 8)),
        (SpeakerHint(exact=3), (3, 3)),
        (SpeakerHint(exact=40), (8, 8)),
        (SpeakerHint(minimum=2), (2, 8)),
        (SpeakerHint(maximum=4), (1, 4)),
        (SpeakerHint(minimum=5, maximum=3), (3, 3)),
    ],
)
def test_the_speaker_count_hint_within_the_ceiling(
    hint: SpeakerHint, bounds: tuple[int, int]
) -> None:
    assert hint.bounds(ceiling=8) == bounds


SPOKEN = [
    Segment(0.0, 2.0, " Ask not", speaker=0),
    Segment(2.0, 3.0, " what", speaker=0),
    Segment(4.6, 5.9, " The horizon.", speaker=1),
]


def test_the_text_opens_a_paragraph_per_change_of_speaker() -> None:
    transcript = Transcript(SPOKEN, "en", 1.0, 6.0)
    assert transcript.render("text") == "Speaker 0: Ask not what\n\nSpeaker 1: The horizon."
    assert transcript.text == "Ask not what The horizon."  # the JSON's text stays plain


def test_captions_name_the_speaker() -> None:
    assert render_captions(SPOKEN[2:], "vtt") == (
        "WEBVTT\n\n00:00:04.600 --> 00:00:05.900\n<v Speaker 1>The horizon.\n"
    )
    assert render_captions(SPOKEN[2:], "srt") == (
        "1\n00:00:04,600 --> 00:00:05,900\n[Speaker 1] The horizon.\n"
    )


def test_the_srt_label_counts_in_its_lines_length() -> None:
    text = "And so my fellow Americans ask not what your country can do for you"
    cues = caption_cues([Segment(0.0, 8.0, text, speaker=0)], 20, 2, "srt")
    for _start, _end, cue in cues:
        assert cue.startswith("[Speaker 0] ")
        assert all(len(line) <= 20 for line in cue.split("\n"))


def test_a_transcriber_told_to_diarize_without_the_extra_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transcriber_service import app
    from transcriber_service.settings import TranscriberSettings

    monkeypatch.setattr(app, "diarization_installed", lambda: False)
    with pytest.raises(RuntimeError, match="DIARIZATION=true, but the diarize extra"):
        app.create_app(TranscriberSettings(diarization=True))
    app.create_app(TranscriberSettings(diarization=False))  # without it, it starts


def test_a_local_run_labels_speakers_where_the_extra_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import transcription_core.speakers as speakers
    from transcription_cli.services import run_environment

    monkeypatch.delenv("DIARIZATION", raising=False)
    for installed, expected in ((True, "true"), (False, "false")):
        monkeypatch.setattr(speakers, "diarization_installed", lambda i=installed: i)
        assert run_environment("127.0.0.1", 8000)["DIARIZATION"] == expected
    monkeypatch.setenv("DIARIZATION", "false")  # the environment has the last word
    monkeypatch.setattr(speakers, "diarization_installed", lambda: True)
    assert run_environment("127.0.0.1", 8000)["DIARIZATION"] == "false"
