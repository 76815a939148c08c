"""Job options, pure: languages, what a served model can do, the chunk fingerprint."""

from __future__ import annotations

import pytest

from transcription_core.options import (
    WHISPER_LANGUAGES,
    DecodeOptions,
    Task,
    capability_problem,
    english_only,
    normalize_language,
)


def test_the_language_list_is_faster_whispers() -> None:
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert frozenset(tokenizer._LANGUAGE_CODES) == WHISPER_LANGUAGES


@pytest.mark.parametrize(
    ("given", "code"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        (" Auto ", None),
        ("EN", "en"),
        ("pt-BR", "pt"),
        ("zh_Hant", "zh"),
        ("haw", "haw"),
    ],
)
def test_languages_are_normalized(given: str | None, code: str | None) -> None:
    assert normalize_language(given) == code


@pytest.mark.parametrize("given", ["xx", "english", "e", "-en"])
def test_an_unknown_language_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="not a language Whisper knows"):
        normalize_language(given)


@pytest.mark.parametrize(
    ("model", "only"),
    [
        ("tiny.en", True),
        ("/models/medium.en/", True),
        ("Base.EN", True),
        ("base", False),
        ("/models/large-v3", False),
        ("/models/en", False),
    ],
)
def test_english_only_models_are_named_dot_en(model: str, only: bool) -> None:
    assert english_only(model) is only


def test_an_english_only_model_neither_translates_nor_hears_other_languages() -> None:
    translate = capability_problem("tiny.en", Task.TRANSLATE, None)
    assert translate is not None and "tiny.en" in translate and "translate" in translate
    german = capability_problem("tiny.en", Task.TRANSCRIBE, "de")
    assert german is not None and "tiny.en" in german and "'de'" in german
    assert capability_problem("tiny.en", Task.TRANSCRIBE, "en") is None
    assert capability_problem("tiny.en", Task.TRANSCRIBE, None) is None
    assert capability_problem("base", Task.TRANSLATE, "de") is None


def test_the_chunk_fingerprint_changes_with_every_option() -> None:
    base = DecodeOptions()
    variants = [
        DecodeOptions(task=Task.TRANSLATE),
        DecodeOptions(word_timestamps=True),
        DecodeOptions(prompt="p"),
        DecodeOptions(hotwords="h"),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 5
    assert DecodeOptions(prompt="p").key() == DecodeOptions(prompt="p").key()
