"""The model server's OpenAI-compatible endpoint with the official ``openai`` client
(issue 15): the served model, translations, and verbose_json segments with ids from 0,
their scores and times to the word."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from testkit.data import DATA, JFK_TEXT
from testkit.procs import model_server
from testkit.text import words

pytestmark = [pytest.mark.model, pytest.mark.slow]

GERMAN = {"die", "der", "und", "das", "ist"}
#: openai 3.x marks ``audio.translations.create`` deprecated (its message: "deprecated");
#: it is still how the client calls ``/v1/audio/translations``, which is what is tested.
TRANSLATIONS_DEPRECATED = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def tiny() -> Iterator[OpenAI]:
    with (
        model_server(MODEL="tiny.en") as server,
        OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    cache = str(tmp_path_factory.mktemp("models"))
    with (
        model_server(MODEL="base", MODEL_CACHE_DIR=cache) as server,
        OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client,
    ):
        yield client


def test_models_lists_the_served_model(tiny: OpenAI) -> None:
    assert [model.id for model in tiny.models.list()] == ["tiny.en"]
    assert tiny.models.retrieve("tiny.en").id == "tiny.en"
    with pytest.raises(openai.NotFoundError):
        tiny.models.retrieve("whisper-1")


def test_verbose_json_segments_count_from_0_with_their_scores_and_word_times(
    tiny: OpenAI,
) -> None:
    with (DATA / "jfk.flac").open("rb") as file:
        result: Any = tiny.audio.transcriptions.create(
            file=file, model="whisper-1", response_format="verbose_json"
        )
    assert words(result.text) == words(JFK_TEXT) and result.task == "transcribe"
    segments = result.segments
    assert [s.id for s in segments] == list(range(len(segments)))
    for segment in segments:
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1
        assert 0 <= segment.start < segment.end <= result.duration
    # Times to the word, as the job API gives them (0.12 → 7.86 → 10.70 s there), not
    # the window's timestamp tokens (which said 0 → 8 → 11 s): "country." ends before 11 s
    # and the boundaries are not whole seconds.
    assert segments[-1].end < 10.9
    boundaries = [s.start for s in segments[1:]] + [segments[-1].end]
    assert any(b != round(b) for b in boundaries)
    assert result.words is None  # not asked for


@TRANSLATIONS_DEPRECATED
def test_translations_give_the_german_half_in_english(base: OpenAI) -> None:
    with (DATA / "multilingual.mp3").open("rb") as file:
        result: Any = base.audio.translations.create(
            file=file, model="whisper-1", response_format="verbose_json"
        )
    assert result.task == "translate"
    second_half = words(" ".join(s.text for s in result.segments if s.start >= 31))
    assert "software" in second_half and not GERMAN & set(second_half), second_half
    with (DATA / "multilingual.mp3").open("rb") as file:
        text = base.audio.translations.create(file=file, model="whisper-1", response_format="text")
    assert "permission" in words(str(text))


@TRANSLATIONS_DEPRECATED
def test_an_english_only_model_refuses_to_translate_naming_itself(tiny: OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        with (DATA / "jfk.flac").open("rb") as file:
            tiny.audio.translations.create(file=file, model="whisper-1")
    assert "tiny.en" in refused.value.response.json()["detail"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        with (DATA / "jfk.flac").open("rb") as file:
            tiny.audio.transcriptions.create(file=file, model="whisper-1", language="de")
    assert "tiny.en" in refused.value.response.json()["detail"]
