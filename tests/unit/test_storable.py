from __future__ import annotations

import json
from typing import Any

import pytest

from transcription_core.storable import dumps, json_problem, text_problem


def nested(depth: int) -> Any:
    value: Any = {}
    for n in range(depth - 1):
        value = {"a": value, "n": n} if n % 2 else [value, "x"]
    return value


@pytest.mark.parametrize(
    "value",
    [{}, [], {"a": [1, 2.5, None, True, 'é"\\\n'], "b": {}}, [[[]], {"k": [{}]}], "s", 3],
)
def test_dumps_matches_json_dumps(value: Any) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_dumps_encodes_what_json_dumps_cannot_for_depth() -> None:
    deep: Any = {}
    for _ in range(4999):
        deep = {"a": [deep, 1]}
    with pytest.raises(RecursionError):
        json.dumps(deep)
    assert dumps(deep) == '{"a":[' * 4999 + "{}" + ",1]}" * 4999


def test_json_problem() -> None:
    assert json_problem({"a": [1, "x", {"b": None}]}, max_depth=3) is None
    assert "deep" in str(json_problem({"a": [[1]]}, max_depth=2))
    assert "deep" in str(json_problem(nested(100_000), max_depth=32))  # no recursion
    assert "finite" in str(json_problem({"a": [float("nan")]}, max_depth=32))
    assert "finite" in str(json_problem({"a": float("-inf")}, max_depth=32))
    assert "key" in str(json_problem({"a\x00": 1}, max_depth=32))
    assert "surrogate" in str(json_problem({"a": ["\udc80"]}, max_depth=32))


def test_text_problem() -> None:
    assert text_problem("ok é 🎙") is None
    assert "NUL" in str(text_problem("a\x00"))
    assert "surrogate" in str(text_problem("\ud800"))
